"""One self-contained HTML report: figures (base64 PNG data URIs), tables, resolved configs,
versions and machines. Opens in a browser with no other file.

    python -m analysis.report RUNS_DIR [--out reports/report.html] [--profile reports/profile.csv]

A tiny inline script sets <body data-images="ok" data-images-loaded="K/N"> once every <img>
has loaded (complete and naturalWidth > 0), data-images="failed" otherwise.
"""

from __future__ import annotations

import base64
import html
import json
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
    display_table,
    main_table,
    per_class_display,
    per_class_table,
    read_profile,
    runs_command,
)
from danet.utils import atomic_write_bytes

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f3f3f3} img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow:auto} .note{color:#a40}
"""
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


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0, na_rep="")


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
        "t-interval over seeds; Δ vs none with its 95% CI (paired t when every seed of the "
        "variant has a baseline run of that seed, else Welch), p Holm-corrected across the "
        f"variants, and the verdict. {html.escape(CONVENTION)}.</p>"
    )
    parts.append(_table_html(display_table(main)))
    parts.append("<h2>Per-class IoU (%)</h2>")
    parts.append(_table_html(per_class_display(per_class_table(df))))
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
    parts.append(_table_html(varying) if not varying.empty else "<p>none</p>")
    parts.append("<h3>Keys common to every run</h3>" + _table_html(common))
    parts.append("<h2>Versions and machines</h2>" + _table_html(machine_table(raw)))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    loaded = runs_command("danet report", __doc__, "reports/report.html", argv)
    if loaded is None:
        return 1
    args, df, problems, raw = loaded
    text = build_html(df, problems, raw, read_profile(args.profile))
    atomic_write_bytes(args.out, text.encode())
    print(f"report of {runs_read(len(df), problems)}: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
