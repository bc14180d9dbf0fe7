"""`python -m variants`: the registry as a markdown table (`make docs` writes the built-ins'
into the README). `danet variants --plugins ./my_attention.py my_pkg.attention` lists your own
modules too (loading plugins is danet's business: the registry imports nothing of danet/).
"""

from __future__ import annotations

import argparse
import sys

import variants


def table(builtin_only: bool = False) -> str:
    """Every registered variant (plugins last, with their source), or the built-ins only."""
    rows = [
        "| name | family | attends over | cost (multiply-adds) | options | paper |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in variants.available():
        v = variants.info(name)
        if builtin_only and not variants.is_builtin(name):
            continue
        opts = ", ".join(f"`{k}={d!r}`" for k, d in variants.options(name).items())
        paper = v.paper if variants.is_builtin(name) else f"{v.paper} (plugin {v.source})".lstrip()
        rows.append(f"| `{name}` | {v.family} | {v.attends} | {v.cost} | {opts} | {paper} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m variants", description=__doc__).parse_args(argv)
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
