"""`python -m variants`: the registry as a markdown table (the README's table is this output)."""

from __future__ import annotations

import variants


def table() -> str:
    rows = [
        "| name | family | attends over | cost (multiply-adds) | options | paper |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in variants.available():
        v = variants.info(name)
        opts = ", ".join(f"`{k}={d!r}`" for k, d in variants.options(name).items())
        rows.append(f"| `{name}` | {v.family} | {v.attends} | {v.cost} | {opts} | {v.paper} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
