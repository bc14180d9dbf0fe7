"""Benchmark tables from result.json files: markdown, LaTeX (booktabs) and CSV.

Writes <out>/main.{md,csv} (one row per dataset x setting x backbone x crop x iterations x
variant, columns named as in the mmsegmentation model zoo: mIoU with its interval, Δ vs the
baseline with its verdict (analysis.stats), and each run's measured cost), <out>/main.tex (the
compact booktabs table for a paper) and <out>/per_class.{md,tex,csv}. Unreadable or
old-schema result.json files are reported on stderr by path and skipped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect import COST, collect_results, runs_read
from analysis.stats import BASELINE, DUAL, decompose, group_keys, mean_ci, summarize
from danet.utils import atomic_write_bytes, command_parser

# group column -> the name users know from the mmsegmentation model zoo
ZOO_NAMES = {
    "variant": "Method",
    "backbone": "Backbone",
    "crop_size": "Crop Size",
    "iterations": "Lr schd",
    "dataset": "Dataset",
    "setting": "Setting",
    "numerics": "Numerics",  # fp32, or the speed options that change the numbers
}
ABLATION_ORDER = ("none", "none (dual)", "pam", "cam", "danet")  # the paper's Table 1, controls
# The Δ column's interval: simultaneous over the table's comparisons (Bonferroni), the level
# its verdict uses, so an interval excluding 0 always sits next to better or worse
DELTA = "Δ mIoU [95% sim. CI]"
CONVENTION = (
    "GFLOPs = 2 x multiply-adds of one forward at the evaluation input (fvcore + handles, "
    "cross-checked by FlopCounterMode); memory: peak tensor memory of one training step "
    "(model, gradients, optimiser state, batch, activations); attn: the attention modules' "
    "own share (the same measured with them replaced by the identity); latency: median "
    "batch-1 forward on the run's device and threads"
)


def variant_order(df: pd.DataFrame, order: Sequence[str] = ()) -> list[str]:
    """The baseline first, then `order` (a grid's axis), Table 1's order, the rest by name."""
    present = set(df["variant"])
    ordered = [BASELINE, BASELINE + DUAL, *order, *ABLATION_ORDER, *sorted(present)]
    return [v for v in dict.fromkeys(ordered) if v in present]


def load(*roots: str | Path) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """collect() plus what the tables need from each valid result.json: miou_msflip (when
    eval has msflip) and the raw result (keyed by run folder) for the report. The problems of
    collect() are passed on unchanged; nothing else is dropped."""
    df, problems, raw = collect_results(*roots)
    msflip = []
    for path in df.get("path", pd.Series(dtype=str)):
        data = raw[path]
        ms = (data.get("eval") or {}).get("msflip") or {}
        msflip.append(ms.get("miou", np.nan))
    if not df.empty:
        df["miou_msflip"] = pd.to_numeric(pd.Series(msflip, index=df.index), errors="coerce")
        for c in [c for c in df.columns if c.startswith("iou/")]:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df, problems, raw


def read_profile(path: str | Path | None) -> pd.DataFrame | None:
    """profile.csv as a DataFrame, or None when no path is given, the file is absent or it
    lacks the variant, scope and size columns (said on stderr)."""
    if path is None or not Path(path).is_file():
        return None
    profile = pd.read_csv(path)
    missing = {"variant", "scope", "size"} - set(profile.columns)
    if missing:
        print(f"{path}: no column {', '.join(sorted(missing))}; profile ignored", file=sys.stderr)
        return None
    return profile


def side(size) -> float:
    """A profile size as one number: 33 -> 33.0, '33x33' -> 33.0, '512x1024' -> 1024.0."""
    if isinstance(size, (int, float)):
        return float(size)
    sides = [float(x) for x in str(size).lower().split("x") if x.strip().replace(".", "").isdigit()]
    return max(sides) if sides else float("nan")


def main_table(
    df: pd.DataFrame, order: Sequence[str] = (), baseline: str = BASELINE,
    latency: dict[tuple, dict] | None = None,
) -> pd.DataFrame:
    """Numeric main table, one row per group x variant, mIoU in percent: the zoo-named group
    columns, mIoU (mean over seeds), its std and 95 % t-interval, n, seeds, Δ vs the
    matched control with its intervals, method, p values and the verdict (analysis.stats),
    [mIoU(ms+flip)], and the runs' measured cost (result.json `cost`, mean over the runs).
    Latency and images/s come from `latency` (analysis.latency: side by side, keyed by group
    values + variant); each run's own in-run latency is kept apart ("In-run latency (ms)")."""
    pct = df.assign(miou=100 * df["miou"])
    keys = group_keys(df)
    s = summarize(pct, "miou", baseline=baseline)
    cost = pct.groupby(keys + ["variant"], dropna=False)[["params", "train_time_s", *COST]].mean()
    cost["ci"] = pct.groupby(keys + ["variant"], dropna=False)["miou"].agg(lambda v: mean_ci(v))
    s = s.merge(cost.reset_index(), on=keys + ["variant"], how="left")
    out = pd.DataFrame({v: s[k] for k, v in ZOO_NAMES.items() if k in s})
    out = out.assign(**{
        "mIoU": s["mean"], "mIoU std": s["std"],
        "mIoU CI low": [c[1] for c in s["ci"]], "mIoU CI high": [c[2] for c in s["ci"]],
        "n": s["n"], "seeds": s["seeds"],
        "vs": s["vs"],
        "Δ mIoU": s["delta"], "Δ CI low": s["ci_low"], "Δ CI high": s["ci_high"],
        "Δ sim. low": s["sim_low"], "Δ sim. high": s["sim_high"],
        "CI method": s["ci_method"], "p": s["p_value"], "p (Holm)": s["p_holm"],
        "p (Bonferroni)": s["p_bonferroni"], "Verdict": s["verdict"],
    })
    if "miou_msflip" in df and df["miou_msflip"].notna().any():
        ms = pct.assign(miou=100 * df["miou_msflip"]).groupby(keys + ["variant"], dropna=False)
        out["mIoU(ms+flip)"] = s.merge(
            ms["miou"].mean().rename("ms").reset_index(), on=keys + ["variant"], how="left"
        )["ms"]
    out = out.assign(**{
        "GFLOPs": 2 * s["gmacs"], "Attn GFLOPs": 2 * s["gmacs_attention"],
        "Params (M)": s["params"] / 1e6, "Attn params (K)": s["params_attention"] / 1e3,
        "Mem (MB)": s["train_peak_mb"], "Attn mem (MB)": s["attention_peak_mb"],
        "In-run latency (ms)": s["latency_ms"], "Train time (s)": s["train_time_s"],
    })
    cells = [tuple(row) for row in s[keys + ["variant"]].itertuples(index=False)]
    side = [(latency or {}).get(c, {}) for c in cells]
    out["Latency (ms)"] = [m.get("median_ms", np.nan) for m in side]
    out["Latency spread (ms)"] = [m.get("spread_ms", np.nan) for m in side]
    out["Images/s"] = 1e3 / out["Latency (ms)"]
    return _order(out, variant_order(df, order))


def _order(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    by = [
        c
        for c in ["Dataset", "Setting", "Backbone", "Crop Size", "Lr schd", "Numerics"]
        if c in table
    ]
    return table.sort_values(
        by + ["Method"], key=lambda s: s.map(rank) if s.name == "Method" else s
    ).reset_index(drop=True)


def per_class_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean IoU (%) per class over seeds (classes absent from a run are skipped in the mean),
    one row per group x variant, zoo-named group columns."""
    keys = group_keys(df)
    cols = [c for c in df.columns if c.startswith("iou/")]
    table = (100 * df.groupby(keys + ["variant"], dropna=False)[cols].mean()).reset_index()
    table = table.rename(columns={c: c.removeprefix("iou/") for c in cols})
    table = table.rename(columns=ZOO_NAMES)
    front = [v for k, v in ZOO_NAMES.items() if k in ["variant", *keys]]
    return _order(table[front + [c.removeprefix("iou/") for c in cols]], variant_order(df))


def p_value(p: float) -> str:
    """A p-value to three decimals, '<0.001' below that (0.000 would claim certainty)."""
    return "" if p != p else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _fmt(x, spec: str = ".2f") -> str:
    return "" if x is None or x is pd.NA or (isinstance(x, float) and x != x) else format(x, spec)


def constant_groups(table: pd.DataFrame) -> dict[str, str]:
    """The group columns (Dataset, Setting, ...) with one value in every row: said once above
    a table instead of repeated in each row."""
    groups = [c for c in ZOO_NAMES.values() if c in table and c != "Method"]
    return {c: str(table[c].iloc[0]) for c in groups if table[c].nunique(dropna=False) == 1}


def display_table(table: pd.DataFrame, compact: bool = False) -> pd.DataFrame:
    """The main table as strings: mIoU as 'mean ± half-width of its 95 % t-interval', Δ as
    '+d [lo, hi]', the test (paired-t or welch), Holm's p, the verdict, and the cost; empty
    cells where a number is missing. Group columns with one value throughout are left out
    (constant_groups says them).
    `compact` (the LaTeX table): variant, n, mIoU, Δ with its verdict, GFLOPs, params and
    memory, one decimal for mIoU, so that it fits a page's width."""
    fixed = constant_groups(table)
    front = [c for c in ZOO_NAMES.values() if c in table and c not in fixed]
    shown = table[front].astype(str)
    if not compact or table["n"].nunique() > 1:  # else the caption says n
        shown["n"] = table["n"].astype(str)
    f = ".1f" if compact else ".2f"
    shown["mIoU (%)"] = [
        f"{m:{f}} ± {(hi - lo) / 2:{f}}" if lo == lo else _fmt(m, f)
        for m, lo, hi in zip(table["mIoU"], table["mIoU CI low"], table["mIoU CI high"])
    ]
    delta = [
        ""
        if verdict in ("baseline", "control")
        else (f"{d:+{f}} [{lo:+{f}}, {hi:+{f}}]" if lo == lo else _fmt(d, "+" + f))
        for d, lo, hi, verdict in zip(
            table["Δ mIoU"], table["Δ sim. low"], table["Δ sim. high"], table["Verdict"]
        )
    ]
    verdict = table["Verdict"]
    controls = table["vs"].fillna("")
    if not compact or controls[controls != ""].nunique() > 1:  # else the caption names it
        shown["vs"] = controls
    if compact:  # narrower: the caption says the interval is simultaneous, on mIoU
        shown["Δ [95% CI]"] = [f"{d} {v}" if d else v for d, v in zip(delta, verdict)]
        columns = [("GFLOPs", ".3f"), ("Params (M)", ".3f"), ("Mem (MB)", ".1f")]
    else:
        shown[DELTA] = delta
        shown["test"] = table["CI method"].where(
            ~table["CI method"].isin(["baseline", "control"]), ""
        )
        shown["p (Bonf.)"] = table["p (Bonferroni)"].map(p_value)
        shown["verdict"] = verdict
        if "mIoU(ms+flip)" in table:
            shown["mIoU(ms+flip)"] = table["mIoU(ms+flip)"].map(_fmt)
        columns = [("GFLOPs", ".3f"), ("Attn GFLOPs", ".3f"), ("Params (M)", ".3f"),
                   ("Attn params (K)", ".1f"), ("Mem (MB)", ".1f"), ("Attn mem (MB)", ".1f"),
                   ]
    for col, spec in columns:
        shown[col] = table[col].map(lambda x, s=spec: _fmt(x, s))
    if not compact and table["Latency (ms)"].notna().any():  # measured side by side only
        shown["Latency (ms)"] = [
            f"{m:.2f} ± {s:.2f}" if m == m else ""
            for m, s in zip(table["Latency (ms)"], table["Latency spread (ms)"])
        ]
    return shown


def per_class_display(table: pd.DataFrame) -> pd.DataFrame:
    """IoU per class as strings; group columns with one value throughout left out."""
    front = [c for c in ZOO_NAMES.values() if c in table]
    fixed = constant_groups(table)
    shown = table[[c for c in front if c not in fixed]].astype(str)
    for c in table.columns[len(front) :]:
        shown[c] = table[c].map(lambda x: _fmt(x, ".1f"))
    return shown


def to_latex(shown: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs table environment of a string table, ready to \\input (needs
    \\usepackage{booktabs}): text escaped, ± and Δ in math mode, numbers right-aligned."""
    styler = shown.style.hide(axis="index").format(escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    align = "".join("l" if c in ZOO_NAMES.values() else "r" for c in shown.columns)
    tex = styler.to_latex(
        hrules=True, caption=caption or None, label=label or None, column_format=align,
        position="t", position_float="centering",
    )
    narrow = "\\footnotesize\n\\setlength{\\tabcolsep}{3pt}\n"  # fits a page's text width
    tex = tex.replace("\\centering\n", "\\centering\n" + narrow, 1)
    return tex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")


def caption(table: pd.DataFrame, what: str) -> str:
    fixed = ", ".join(f"{k} {v}" for k, v in constant_groups(table).items())
    return f"{what}{'; ' + fixed if fixed else ''}."


def decomposition_table(df: pd.DataFrame) -> pd.DataFrame:
    """analysis.stats.decompose in percent, zoo-named group columns: for each dual-head
    variant, its gain over the single-head baseline (paper protocol), the head's part and the
    attention's part, each with its unadjusted 95 % interval and p."""
    d = decompose(df.assign(miou=100 * df["miou"]))
    if d.empty:
        return d
    out = pd.DataFrame({v: d[k] for k, v in ZOO_NAMES.items() if k in d})
    return out.assign(**{
        "Part": d["part"], "Contrast": d["contrast"], "Δ mIoU": d["delta"],
        "CI low": d["ci_low"], "CI high": d["ci_high"], "CI method": d["ci_method"],
        "p": d["p_value"],
    })


def decomposition_display(table: pd.DataFrame) -> pd.DataFrame:
    fixed = constant_groups(table)
    shown = table[[c for c in ZOO_NAMES.values() if c in table and c not in fixed]].astype(str)
    shown["part"], shown["contrast"] = table["Part"], table["Contrast"]
    shown["Δ mIoU [95% CI]"] = [
        f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo == lo else _fmt(d, "+.2f")
        for d, lo, hi in zip(table["Δ mIoU"], table["CI low"], table["CI high"])
    ]
    shown["test"] = table["CI method"]
    shown["p"] = table["p"].map(p_value)
    return shown


def control_warnings(main: pd.DataFrame) -> list[str]:
    """One line per row left without a verdict because its matched control is missing."""
    rows = main[main["Verdict"] == "no control"]
    return [
        f"{m}: no verdict: its matched control '{vs}' (the same head, branches and losses "
        f"without the attention) has no runs here; add them (e.g. model.variant: none with "
        f"model.head: {'dual' if vs.endswith(DUAL) else 'single'})"
        for m, vs in zip(rows["Method"], rows["vs"])
    ]


def write_tables(
    df: pd.DataFrame, out: Path, order: Sequence[str] = (),
    latency: dict[tuple, dict] | None = None, latency_note: str = "",
) -> dict[str, pd.DataFrame]:
    """<out>/main.{md,csv}, <out>/main.tex (the compact table), <out>/per_class.{md,tex,csv},
    and <out>/decomposition.{md,tex,csv} when a dual-head variant ran; returns the numeric
    tables."""
    main = main_table(df, order, latency=latency)
    per_class = per_class_table(df)
    parts = decomposition_table(df)
    n = f"n = {main['n'].min()}" + (f"-{main['n'].max()}" if main["n"].nunique() > 1 else "")
    m = int(main["p"].notna().sum())
    what = (
        f"mIoU (\\%) over seeds ({n}): mean $\\pm$ half-width of its 95\\% t-interval; "
        "$\\Delta$ vs the matched control (the same head without the attention) with its "
        f"simultaneous 95\\% interval over the {m} comparisons (Bonferroni) and verdict; "
        "GFLOPs of one forward; training peak memory"
    )
    files = [
        ("main", main, display_table(main), display_table(main, compact=True), what),
        ("per_class", per_class, per_class_display(per_class), None, "IoU (\\%) per class"),
    ]
    if not parts.empty:
        files.append(("decomposition", parts, decomposition_display(parts), None,
                      "Where the gain of a dual-head variant over the single-head baseline "
                      "comes from: the head's second branch and losses, and the attention "
                      "(unadjusted 95\\% intervals)"))
    for name, table, shown, tex_shown, text in files:
        atomic_write_bytes(out / f"{name}.csv", table.to_csv(index=False).encode())
        head = "; ".join(f"{k} {v}" for k, v in constant_groups(table).items())
        if name == "main" and latency_note:
            head = f"{head}\n\n{latency_note}" if head else latency_note
        md = (f"{head}\n\n" if head else "") + shown.to_markdown(index=False, disable_numparse=True)
        atomic_write_bytes(out / f"{name}.md", (md + "\n").encode())
        tex = to_latex(tex_shown if tex_shown is not None else shown, caption(table, text),
                       f"tab:{name}")
        atomic_write_bytes(out / f"{name}.tex", tex.encode())
    return {"main": main, "per_class": per_class, "decomposition": parts}


def report_problems(problems: Sequence[str], prog: str) -> None:
    for p in problems:
        print(f"{prog}: warning: {p}", file=sys.stderr)


def runs_parser(prog: str, doc: str | None, out: str) -> argparse.ArgumentParser:
    """The shared command line of tables, plots and report: RUNS_DIR [--out] [--profile]."""
    ap = command_parser(prog, doc)
    ap.add_argument("runs_dir", type=Path, help="folder searched for result.json (e.g. runs)")
    ap.add_argument("--out", type=Path, default=Path(out), help=f"output (default: {out})")
    ap.add_argument(
        "--profile", type=Path, default=Path("reports/profile.csv"),
        help="`danet profile`'s CSV, for the scaling figure (default: reports/profile.csv; "
        "skipped when absent)",
    )
    return ap


def parser() -> argparse.ArgumentParser:
    ap = runs_parser("danet tables", __doc__, "reports/tables")
    ap.add_argument(
        "--latency", action="store_true",
        help="measure every row's latency side by side in this process (analysis.latency), "
        "unless this machine already has that measurement (a sweep's report makes it); "
        "without it only an earlier one is shown",
    )
    return ap


def side_by_side(df: pd.DataFrame, raw: dict[str, dict], run: bool) -> tuple[dict, str]:
    """analysis.latency.table_latency for this table's rows, cached under the cache folder."""
    from analysis.latency import table_latency
    from danet.data.scene_cache import cache_dir

    return table_latency(df, raw, group_keys(df), cache_dir() / "latency", run=run)


def runs_command(ap: argparse.ArgumentParser, argv: list[str] | None):
    """Parse the shared command line and read the runs. Returns (args, runs DataFrame,
    problems, raw results), or None when no run was read."""
    args = ap.parse_args(argv)
    prog = ap.prog
    df, problems, raw = load(args.runs_dir)
    report_problems(problems, prog)
    if df.empty:
        print(f"{prog}: no valid result.json under {args.runs_dir}", file=sys.stderr)
        return None
    return args, df, problems, raw


def main(argv: list[str] | None = None) -> int:
    loaded = runs_command(parser(), argv)
    if loaded is None:
        return 1
    args, df, problems, raw = loaded
    latency, note = side_by_side(df, raw, args.latency)
    tables = write_tables(df, args.out, latency=latency, latency_note=note)
    for line in control_warnings(tables["main"]):
        print(f"danet tables: warning: {line}", file=sys.stderr)
    runs = runs_read(len(df), problems)
    print(f"tables of {runs} in {args.out}/ (main, per_class: .md .tex .csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
