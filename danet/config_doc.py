"""`python -m danet.config_doc`: every config key as a markdown table, generated from
danet/config.py (docs/configuration.md carries this output; tests/test_docs.py keeps the two
equal).

Each row is a key, its type as annotated, its default as YAML would write it, and the comment
written next to the field in danet/config.py: the comment at the end of its line, or, when
there is none, the comment lines directly above it. A field without either has an empty
meaning; the fix is a comment in danet/config.py, not here.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
import typing
from pathlib import Path
from typing import Any

from danet import config as C


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """({line: trailing comment}, {line: comment that is alone on its line}), 1-based lines,
    without the leading '#'."""
    trailing: dict[int, str] = {}
    alone: dict[int, str] = {}
    code_lines: set[int] = set()
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line = tok.start[0]
            text = tok.string.lstrip("#").strip()
            (trailing if line in code_lines else alone)[line] = text
        elif tok.type not in skip:
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return trailing, alone


def field_comments(source: str | None = None) -> dict[tuple[str, str], str]:
    """{(dataclass name, field name): its comment} for every annotated field in the source."""
    source = Path(C.__file__).read_text() if source is None else source
    trailing, alone = _comments(source)
    out: dict[tuple[str, str], str] = {}
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef):
            continue
        for node in cls.body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            end = node.end_lineno or node.lineno
            after = [trailing[n] for n in range(node.lineno, end + 1) if n in trailing]
            above: list[str] = []
            line = node.lineno - 1
            while line in alone:
                above.insert(0, alone[line])
                line -= 1
            out[(cls.name, node.target.id)] = " ".join(after or above)
    return out


def _annotations(source: str) -> dict[tuple[str, str], str]:
    """{(dataclass name, field name): its annotation as written}."""
    out: dict[tuple[str, str], str] = {}
    for cls in ast.walk(ast.parse(source)):
        if isinstance(cls, ast.ClassDef):
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    out[(cls.name, node.target.id)] = ast.unparse(node.annotation)
    return out


def _yaml(value: Any) -> str:
    """A default as it is written in a config file or a key=value override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if value == "":
        return '""'
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def rows(obj: Any = C.Config, instance: Any = None, prefix: str = "") -> list[tuple]:
    """(key, dataclass name, field name, default) for every leaf key, in flat_keys order."""
    instance = obj() if instance is None else instance
    hints = typing.get_type_hints(obj)
    out: list[tuple] = []
    for f in dataclasses.fields(obj):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += rows(hints[f.name], value, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", obj.__name__, f.name, value))
    return out


def dataclass_table(cls: type, path: str | Path) -> str:
    """The markdown table of a flat dataclass's keys (key, type, default, meaning), its meanings
    the comments beside its fields in `path` (the launcher's keys: slurm/grid.py)."""
    source = Path(path).read_text()
    comments, types = field_comments(source), _annotations(source)
    lines = [
        f"| key | type | default | meaning (the comment in {Path(path).parent.name}/"
        f"{Path(path).name}) |",
        "| --- | --- | --- | --- |",
    ]
    instance = cls()
    for f in dataclasses.fields(cls):
        lines.append(
            f"| `{f.name}` | `{_cell(types[(cls.__name__, f.name)])}` "
            f"| `{_cell(_yaml(getattr(instance, f.name)))}` "
            f"| {_cell(comments[(cls.__name__, f.name)])} |"
        )
    return "\n".join(lines)


def config_table() -> str:
    """The markdown table of every config key: key, type, default, meaning."""
    source = Path(C.__file__).read_text()
    comments, types = field_comments(source), _annotations(source)
    lines = [
        "| key | type | default | meaning (the comment in danet/config.py) |",
        "| --- | --- | --- | --- |",
    ]
    for key, cls, name, value in rows():
        lines.append(
            f"| `{key}` | `{_cell(types[(cls, name)])}` | `{_cell(_yaml(value))}` "
            f"| {_cell(comments[(cls, name)])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(config_table())
