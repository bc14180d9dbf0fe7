"""Attention modules from the user's own code: the config key `plugins` names Python modules
(`my_pkg.attention`) or .py files (`./my_attention.py`) whose import calls
`variants.register(...)`. Every process that checks or builds a model loads them first
(danet.checks.check_config), so sweep jobs in fresh processes find them too.

Relative file paths are made absolute when the config is read (`resolve`): against the folder
of the grid or config file that names them, else the current directory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from danet.errors import DanetError

FIX = "fix it, or remove it from the config key 'plugins'"


def is_file(entry: str) -> bool:
    """A path to a .py file (else an importable module name)."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def resolve(entries: Iterable[str], base: Path | None = None) -> tuple[str, ...]:
    """File entries made absolute against `base` (default: the current directory)."""
    base = Path.cwd() if base is None else base
    return tuple(
        str((base / e).absolute().resolve()) if is_file(e) and not Path(e).is_absolute() else e
        for e in entries
    )


def module_name(path: Path) -> str:
    """A stable module name for a plugin file: the same file is the same module."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    return f"danet_plugin_{stem}_{digest}"


def load(entries: Iterable[str]) -> None:
    """Import each plugin once (again: nothing happens); a DanetError names the plugin."""
    for entry in entries:
        _load_one(entry)


def _load_one(entry: str) -> None:
    import variants

    if is_file(entry):
        path = Path(entry).absolute()
        name = module_name(path)
        if name in sys.modules:
            return
        if not path.is_file():
            raise DanetError(f"plugin {entry}: file not found; {FIX}")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise DanetError(f"plugin {entry}: not a Python file; {FIX}")
        module = importlib.util.module_from_spec(spec)
    else:
        name = entry
        if name in sys.modules:
            return
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as e:  # a parent package missing, or a bad name
            spec, error = None, f"{type(e).__name__}: {e}"
        else:
            error = f"no module named '{name}'"
        if spec is None:
            raise DanetError(
                f"plugin {entry}: cannot be imported ({error}); give a module on the Python "
                f"path or a path to a .py file; {FIX}"
            )
        module = None
    before = set(variants._REGISTRY)
    variants._PLUGIN = entry
    try:
        if module is None:
            importlib.import_module(name)
        else:
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException as e:
        sys.modules.pop(name, None)
        for added in set(variants._REGISTRY) - before:  # a later import starts clean
            del variants._REGISTRY[added]
        if isinstance(e, DanetError):  # from variants.register: names the plugin already
            raise
        if not isinstance(e, Exception):
            raise
        first = (str(e).splitlines() or [""])[0]
        raise DanetError(
            f"plugin {entry} failed to import: {type(e).__name__}: {first}; {FIX}"
        ) from None
    finally:
        variants._PLUGIN = ""


def record(entries: Iterable[str]) -> list[dict]:
    """result.json's `plugins`: each plugin file's path and sha256 (a module: its file)."""
    from danet.utils import sha256_file

    out = []
    for entry in entries:
        if is_file(entry):
            path = Path(entry).absolute()
        else:
            module = sys.modules.get(entry)
            path = Path(getattr(module, "__file__", None) or entry)
        sha = sha256_file(path) if path.is_file() else None
        out.append({"entry": entry, "path": str(path), "sha256": sha})
    return out
