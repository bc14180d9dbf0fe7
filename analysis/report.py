"""One self-contained HTML report: figures (base64 PNG data URIs), tables, resolved configs,
versions and machines. Opens in a browser with no other file.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis.collect import runs_read
from analysis.plots import figure_bytes, make_figures
from analysis.tables import (
    CONVENTION,
    constant_groups,
    decomposition_display,
    decomposition_table,
    display_table,
    main_table,
    per_class_display,
    per_class_table,
    read_profile,
    runs_command,
    runs_parser,
)
from danet.utils import atomic_write_bytes

# Wide tables scroll inside their own box (.table-wrap), never the page: the header row sticks
# to the box's top and, in the result tables (.sticky-first), the first column to its left
# edge. Sticky cells need border-collapse: separate (collapsed borders scroll away) and an
# opaque background. The box's max-height gives the sticky header something to stick in.
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
  overflow-wrap:break-word}
.table-wrap{width:fit-content;max-width:100%;max-height:80vh;overflow:auto;margin:1em 0;
  border-top:1px solid #ccc;border-left:1px solid #ccc}
table{border-collapse:separate;border-spacing:0;font-size:12px;
  font-variant-numeric:tabular-nums;line-height:1.35}
th,td{border-right:1px solid #ccc;border-bottom:1px solid #ccc;padding:2px 6px;
  text-align:left;white-space:nowrap;background:#fff}
th.num,td.num{text-align:right}
thead th{position:sticky;top:0;z-index:2;background:#f3f3f3;vertical-align:bottom}
tbody tr:nth-child(even) td{background:#fafafa} tbody tr:hover td{background:#eef4fb}
.sticky-first td:first-child,.sticky-first th:first-child{position:sticky;left:0;z-index:1;
  box-shadow:1px 0 0 #999}
.sticky-first thead th:first-child{z-index:3}
.wrap td:not(.num){white-space:normal;overflow-wrap:anywhere;min-width:8em}
img{max-width:100%;height:auto;border:1px solid #eee} figure{margin:1em 0}
pre{background:#f7f7f7;padding:.6em;overflow:auto} .note{color:#a40}
"""
# <body data-images="ok" data-images-loaded="K/N"> once every <img> has loaded (complete and
# naturalWidth > 0), data-images="failed" otherwise: what a headless browser checks
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-loaded', ok.length + '/' + imgs.length);
  document.body.setAttribute('data-images', ok.length === imgs.length ? 'ok' : 'failed');
});
"""


def _text(v: object) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else str(v)


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{'train': {'lr': 1}} -> {'train.lr': 1}; lists are kept as JSON text."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple, dict)) else v
    return out


def config_tables(raw: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(common, varying) of the runs' resolved configs: the keys with one value in every run
    (key, value), and one row per distinct combination of the other keys with its runs."""
    flat = pd.DataFrame(
        [{"run": Path(p).name, **flatten(r.get("config") or {})} for p, r in raw.items()]
    )
    if flat.empty:
        return pd.DataFrame(columns=["key", "value"]), pd.DataFrame()
    keys = [c for c in flat.columns if c != "run"]
    text = flat[keys].map(_text)
    varying = [k for k in keys if text[k].nunique(dropna=False) > 1]
    fixed = [k for k in keys if k not in varying]
    common = pd.DataFrame({"key": fixed, "value": [text[k].iloc[0] for k in fixed]})
    if not varying:
        return common, pd.DataFrame()
    combos = (
        text.assign(run=flat["run"])
        .groupby(varying, sort=True, dropna=False)["run"]
        .agg(lambda s: ", ".join(sorted(s)))
        .reset_index()
        .rename(columns={"run": "runs"})
    )
    return common, combos


def machine_table(raw: dict[str, dict]) -> pd.DataFrame:
    """One row per distinct (device, threads, versions...) with the number of runs."""
    rows = []
    for r in raw.values():
        versions = r.get("versions") or {}
        rows.append(
            {
                "device": r.get("device"),
                "threads": r.get("threads"),
                "world_size": r.get("world_size"),
                **{k: v for k, v in versions.items()},
                "git": (r.get("git") or {}).get("commit"),
            }
        )
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows).map(_text)
    return t.groupby(list(t.columns), sort=True, dropna=False).size().reset_index(name="runs")


_NUM = r"[+\-\u2212]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
# a number, 'mean ± half-width' or '+d [lo, hi]': right-aligned so that digits line up
NUMBER = re.compile(rf"{_NUM}(?: ± {_NUM})?(?: \[{_NUM}, {_NUM}\])?")


def numeric_columns(df: pd.DataFrame) -> list[bool]:
    """Per column: every non-empty cell is a number (and at least one is)."""
    out = []
    for c in df.columns:
        cells = [t for t in df[c].map(_text) if t]
        out.append(bool(cells) and all(NUMBER.fullmatch(t) for t in cells))
    return out


def _table_html(df: pd.DataFrame, sticky_first: bool = False, wrap: bool = False) -> str:
    """The table in its own horizontally scrolling box, numeric columns right-aligned.
    `sticky_first`: the first column (the method) stays in view while scrolling sideways;
    `wrap`: text cells may wrap (long config values) instead of widening the table."""
    num = numeric_columns(df)
    classes = " ".join(c for c, on in [("sticky-first", sticky_first), ("wrap", wrap)] if on)

    def cell(tag: str, value: object, is_num: bool) -> str:
        attr = " class='num'" if is_num else ""
        return f"<{tag}{attr}>{html.escape(_text(value), quote=False)}</{tag}>"

    head = "".join(cell("th", c, n) for c, n in zip(df.columns, num))
    rows = [
        "<tr>" + "".join(cell("td", v, n) for v, n in zip(row, num)) + "</tr>"
        for row in df.itertuples(index=False, name=None)
    ]
    table_class = f" class='{classes}'" if classes else ""
    return (
        f"<div class='table-wrap'><table{table_class}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def build_html(
    df: pd.DataFrame, problems: list[str], raw: dict[str, dict], profile: pd.DataFrame | None
) -> str:
    figs, notes = make_figures(df, profile)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>danet-bench report</title>",
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
        "<h1>danet-bench report</h1>",
        f"<p>{html.escape(runs_read(len(df), problems))}; generated "
        f"{html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}."
        f" Profile (scaling figure): {'yes' if profile is not None else 'none'}.</p>",
    ]
    if problems:
        parts.append("<h2>Skipped result files</h2><ul class='note'>")
        parts += [f"<li>{html.escape(p)}</li>" for p in problems]
        parts.append("</ul>")
    main = main_table(df)
    fixed = "; ".join(f"{k} {v}" for k, v in constant_groups(main).items())
    parts.append(
        f"<h2>Main table</h2><p>{html.escape(fixed)}. mIoU (%): mean ± half-width of its 95% "
        "t-interval over seeds; Δ vs the matched control (vs: the same head, branches and "
        "losses without the attention) with its simultaneous 95% interval over the table's "
        "comparisons (Bonferroni; paired t when every seed of the variant has a control run "
        "of that seed, else Welch), p Bonferroni-adjusted, and the verdict. "
        f"{html.escape(CONVENTION)}.</p>"
    )
    parts.append(_table_html(display_table(main), sticky_first=True))
    decomposition = decomposition_table(df)
    if not decomposition.empty:
        parts.append(
            "<h2>Where the dual head's gain comes from</h2><p>Each dual-head variant against "
            "the single-head baseline (the paper's protocol), split into the head's part (the "
            "second branch and its two losses: none (dual) - none) and the attention's part "
            "(the variant - none (dual)); unadjusted 95% intervals.</p>"
        )
        parts.append(_table_html(decomposition_display(decomposition), sticky_first=True))
    parts.append("<h2>Per-class IoU (%)</h2>")
    parts.append(_table_html(per_class_display(per_class_table(df)), sticky_first=True))
    parts.append("<h2>Figures</h2>")
    for name, fig in figs.items():
        data = base64.b64encode(figure_bytes(fig, "png")).decode()
        plt.close(fig)
        parts.append(
            f"<figure id='fig-{name}'><img alt='{name}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    if notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes))
        parts.append("</ul>")
    common, varying = config_tables(raw)
    parts.append("<h2>Resolved configs</h2><h3>Keys that vary between runs</h3>")
    parts.append(_table_html(varying, wrap=True) if not varying.empty else "<p>none</p>")
    parts.append("<h3>Keys common to every run</h3>" + _table_html(common, wrap=True))
    parts.append("<h2>Versions and machines</h2>" + _table_html(machine_table(raw), wrap=True))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def parser() -> argparse.ArgumentParser:
    return runs_parser("danet report", __doc__, "reports/report.html")


def main(argv: list[str] | None = None) -> int:
    loaded = runs_command(parser(), argv)
    if loaded is None:
        return 1
    args, df, problems, raw = loaded
    text = build_html(df, problems, raw, read_profile(args.profile))
    atomic_write_bytes(args.out, text.encode())
    print(f"report of {runs_read(len(df), problems)}: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
