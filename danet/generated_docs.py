"""The documentation blocks that code generates: `make docs` rewrites them in place,
`python -m danet.generated_docs --check` (and tests/test_docs.py) fails when one is stale.

A block sits between `<!-- NAME -->` and `<!-- /NAME -->` lines; adding a built-in variant or a
config key changes its table here, and nothing else needs a hand edit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _variants() -> str:
    from variants.__main__ import table

    return table(builtin_only=True)


def _config() -> str:
    from danet.config_doc import config_table

    return config_table()


def _launcher() -> str:
    import slurm.grid
    from danet.config_doc import dataclass_table

    return dataclass_table(slurm.grid.Launcher, slurm.grid.__file__)


BLOCKS: dict[tuple[str, str], Callable[[], str]] = {
    ("README.md", "variants-table"): _variants,
    ("docs/configuration.md", "config-table"): _config,
    ("docs/slurm.md", "launcher-table"): _launcher,
}


def render(text: str, marker: str, body: str, where: str) -> str:
    """`text` with the block `marker` replaced by `body`."""
    start, end = f"<!-- {marker} -->\n", f"\n<!-- /{marker} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{where}: no <!-- {marker} --> ... <!-- /{marker} --> block")
    head, rest = text.split(start, 1)
    return head + start + body + end + rest.split(end, 1)[1]


def stale(root: Path = REPO) -> dict[Path, str]:
    """Each file whose blocks differ from what the code generates -> its regenerated text."""
    out: dict[Path, str] = {}
    for name in dict.fromkeys(name for name, _ in BLOCKS):
        old = new = (root / name).read_text()
        for marker, make in ((m, f) for (n, m), f in BLOCKS.items() if n == name):
            new = render(new, marker, make(), name)
        if new != old:
            out[root / name] = new
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m danet.generated_docs", description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if a block is stale; write none")
    args = p.parse_args(argv)
    changed = stale()
    for path, text in changed.items():
        if args.check:
            print(f"{path.relative_to(REPO)} is stale: run `make docs`", file=sys.stderr)
        else:
            path.write_text(text)
            print(f"rewrote {path.relative_to(REPO)}", file=sys.stderr)
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
