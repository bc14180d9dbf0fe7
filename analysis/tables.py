"""Benchmark tables from result.json files: markdown, LaTeX (booktabs) and CSV.

    python -m analysis.tables RUNS_DIR [--out reports/tables] [--profile reports/profile.csv]

Writes <out>/main.{md,tex,csv} (one row per dataset x setting x backbone x crop x iterations x
variant, columns named as in the mmsegmentation model zoo) and <out>/per_class.{md,tex,csv}.
Unreadable or old-schema result.json files are reported on stderr by path and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.ablation import variant_order
from analysis.collect import collect, runs_read
from analysis.stats import BASELINE, group_keys, summarize
from danet.utils import atomic_write_bytes

FEATURE_STRIDE = 8  # DANet's dilated backbones: the attention sees crop / 8
PROFILE_COLUMNS = (
    "params_m",
    "gmacs_fvcore",
    "gflops_flopcounter",
    "mem_fwd_mb",
    "mem_fwdbwd_mb",
    "latency_ms",
)
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


def feature_size(crop: str) -> float:
    """The attention's feature side for a crop label: the longer crop side / 8."""
    sides = [int(s) for s in str(crop).split("x") if s.isdigit()]
    return max(sides) / FEATURE_STRIDE if sides else float("nan")


def load(*roots: str | Path) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """collect() plus what the tables need from each valid result.json: miou_msflip (when
    eval has msflip) and the raw result (keyed by run folder) for the report. The problems of
    collect() are passed on unchanged; nothing else is dropped."""
    df, problems = collect(*roots)
    raw: dict[str, dict] = {}
    msflip = []
    for path in df.get("path", pd.Series(dtype=str)):
        data = json.loads((Path(path) / "result.json").read_text())
        raw[path] = data
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


NARROW = ("tiny", "resnet18", "resnet34")  # backbones whose features are not 2048 wide


def profile_row(profile: pd.DataFrame | None, variant: str, crop: str, backbone: str = "") -> dict:
    """The profile numbers for a variant: the scope 'head' row at the size nearest the runs'
    feature size (crop / 8), else the 'model' row (of the runs' backbone when profiled)
    nearest the crop; {} when there is none. params come back in millions."""
    if profile is None or profile.empty:
        return {}
    rows = profile[profile["variant"] == variant]
    for scope, target in (("head", feature_size(crop)), ("model", feature_size(crop) * 8)):
        cand = rows[rows["scope"] == scope]
        if scope == "head" and backbone in NARROW:
            continue  # the profiled head is DANet's 2048 -> 512, not these backbones' head
        if scope == "model":  # a whole model only stands for runs of the same backbone
            same = cand["backbone"] == backbone if "backbone" in cand else False
            cand = cand[same] if backbone else cand
        if cand.empty:
            continue
        dist = (cand["size"].map(side) - target).abs()
        pick = cand.loc[dist.idxmin()] if dist.notna().any() else cand.iloc[0]
        params = pick.get("params_m", np.nan)
        if (params is None or params != params) and "params" in pick:
            params = pd.to_numeric(pick["params"], errors="coerce") / 1e6
        out = {"scope": scope, "size": pick["size"], "params_m": params}
        return out | {c: pick.get(c) for c in PROFILE_COLUMNS if c != "params_m"}
    return {}


def main_table(
    df: pd.DataFrame, profile: pd.DataFrame | None = None, baseline: str = BASELINE
) -> pd.DataFrame:
    """Numeric main table, mIoU in percent: Method, Backbone, Crop Size, Lr schd, Dataset,
    Setting, mIoU, mIoU std, n, seeds, Δ mIoU, Δ CI low, Δ CI high, CI method, CI includes 0,
    [mIoU(ms+flip)], Params (M), Mem (GB) (training peak), and from the profile (NaN without
    one): Profile scope, Profile size, GFLOPs, GMACs (fvcore), Profile params (M),
    Mem fwd (MB), Mem fwd+bwd (MB), Latency (ms), Inf time (fps) = 1000 / latency_ms."""
    pct = df.assign(miou=100 * df["miou"])
    s = summarize(pct, "miou", baseline=baseline)
    keys = group_keys(df)
    extra = (
        pct.groupby(keys + ["variant"], dropna=False)
        .agg(params=("params", "mean"), mem=("peak_memory_mb", "mean"))
        .reset_index()
    )
    s = s.merge(extra, on=keys + ["variant"], how="left")
    has_ms = "miou_msflip" in df and df["miou_msflip"].notna().any()
    if has_ms:
        ms = summarize(df.assign(miou=100 * df["miou_msflip"]), "miou", baseline=baseline)
        s = s.merge(
            ms[keys + ["variant", "mean"]].rename(columns={"mean": "ms"}),
            on=keys + ["variant"],
            how="left",
        )
    prof = [
        profile_row(profile, r.variant, getattr(r, "crop_size", ""), getattr(r, "backbone", ""))
        for r in s.itertuples()
    ]
    p = pd.DataFrame(prof, index=s.index, columns=["scope", "size", *PROFILE_COLUMNS])
    lat = pd.to_numeric(p["latency_ms"], errors="coerce")
    out = pd.DataFrame({v: s[k] for k, v in ZOO_NAMES.items() if k in s})
    out = out.assign(
        **{
            "mIoU": s["mean"],
            "mIoU std": s["std"],
            "n": s["n"],
            "seeds": s["seeds"],
            "Δ mIoU": s["delta"],
            "Δ CI low": s["ci_low"],
            "Δ CI high": s["ci_high"],
            "CI method": s["ci_method"],
            "CI includes 0": s["ci_includes_zero"],
        }
    )
    if has_ms:
        out["mIoU(ms+flip)"] = s["ms"]
    out = out.assign(
        **{
            "Params (M)": s["params"] / 1e6,
            "Mem (GB)": s["mem"] / 1024,
            "Profile scope": p["scope"],
            "Profile size": p["size"],
            "GFLOPs": pd.to_numeric(p["gflops_flopcounter"], errors="coerce"),
            "GMACs (fvcore)": pd.to_numeric(p["gmacs_fvcore"], errors="coerce"),
            "Profile params (M)": pd.to_numeric(p["params_m"], errors="coerce"),
            "Mem fwd (MB)": pd.to_numeric(p["mem_fwd_mb"], errors="coerce"),
            "Mem fwd+bwd (MB)": pd.to_numeric(p["mem_fwdbwd_mb"], errors="coerce"),
            "Latency (ms)": lat,
            "Inf time (fps)": 1000 / lat,
        }
    )
    return _order(out, df)


def _order(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(variant_order(df))}
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
    return _order(table[front + [c.removeprefix("iou/") for c in cols]], df)


def _fmt(x, spec: str = ".2f") -> str:
    return "" if x is None or x is pd.NA or (isinstance(x, float) and x != x) else format(x, spec)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The main table as strings for markdown/LaTeX/HTML: mIoU as 'mean ± std',
    Δ as '+d [lo, hi]', the flag as 'yes'/'no', empty cells where a number is missing."""
    front = [c for c in ZOO_NAMES.values() if c in table]
    shown = table[front].astype(str)
    shown["mIoU"] = [
        f"{m:.2f} ± {s:.2f}" if s == s else _fmt(m)
        for m, s in zip(table["mIoU"], table["mIoU std"])
    ]
    shown["n"] = table["n"].astype(str)
    shown["Δ mIoU [95% CI]"] = [
        ""
        if meth == "baseline"
        else (f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo == lo else _fmt(d, "+.2f"))
        for d, lo, hi, meth in zip(
            table["Δ mIoU"], table["Δ CI low"], table["Δ CI high"], table["CI method"]
        )
    ]
    shown["CI method"] = table["CI method"].where(table["CI method"] != "baseline", "")
    shown["CI includes 0"] = [
        "" if f is pd.NA else ("yes" if f else "no") for f in table["CI includes 0"]
    ]
    if "mIoU(ms+flip)" in table:
        shown["mIoU(ms+flip)"] = table["mIoU(ms+flip)"].map(_fmt)
    shown["Profile"] = [
        f"{sc} {sz}" if isinstance(sc, str) else ""
        for sc, sz in zip(table["Profile scope"], table["Profile size"])
    ]
    for col, spec in [
        ("Params (M)", ".3f"),
        ("Mem (GB)", ".3f"),
        ("GFLOPs", ".3f"),
        ("Mem fwd+bwd (MB)", ".1f"),
        ("Inf time (fps)", ".1f"),
    ]:
        shown[col] = table[col].map(lambda x, s=spec: _fmt(x, s))
    return shown


def per_class_display(table: pd.DataFrame) -> pd.DataFrame:
    front = [c for c in ZOO_NAMES.values() if c in table]
    shown = table[front].astype(str)
    for c in table.columns[len(front) :]:
        shown[c] = table[c].map(lambda x: _fmt(x, ".1f"))
    return shown


def to_latex(shown: pd.DataFrame, caption: str = "") -> str:
    """booktabs LaTeX of a string table (special characters escaped, ± and Δ in math mode)."""
    styler = shown.style.hide(axis="index").format(escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    tex = styler.to_latex(hrules=True, caption=caption or None, column_format="l" * shown.shape[1])
    return tex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")


def write_tables(
    df: pd.DataFrame, out: Path, profile: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """<out>/main.{md,tex,csv} and <out>/per_class.{md,tex,csv}; returns the numeric tables."""
    main = main_table(df, profile)
    per_class = per_class_table(df)
    for name, table, shown, caption in [
        ("main", main, display_table(main), "mIoU (\\%), mean ± std over seeds"),
        ("per_class", per_class, per_class_display(per_class), "IoU (\\%) per class"),
    ]:
        atomic_write_bytes(out / f"{name}.csv", table.to_csv(index=False).encode())
        md = shown.to_markdown(index=False, disable_numparse=True) + "\n"
        atomic_write_bytes(out / f"{name}.md", md.encode())
        atomic_write_bytes(out / f"{name}.tex", to_latex(shown, caption).encode())
    return {"main": main, "per_class": per_class}


def report_problems(problems: Sequence[str], prog: str) -> None:
    for p in problems:
        print(f"{prog}: warning: {p}", file=sys.stderr)


def runs_command(prog: str, doc: str | None, out: str, argv: list[str] | None):
    """The shared command line of tables, plots and report: RUNS_DIR [--out] [--profile].
    Returns (args, runs DataFrame, problems, raw results), or None when no run was read."""
    ap = argparse.ArgumentParser(prog=prog, description=doc)
    ap.add_argument("runs_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--profile", type=Path, default=Path("reports/profile.csv"))
    args = ap.parse_args(argv)
    df, problems, raw = load(args.runs_dir)
    report_problems(problems, prog)
    if df.empty:
        print(f"{prog}: no valid result.json under {args.runs_dir}", file=sys.stderr)
        return None
    return args, df, problems, raw


def main(argv: list[str] | None = None) -> int:
    loaded = runs_command("danet tables", __doc__, "reports/tables", argv)
    if loaded is None:
        return 1
    args, df, problems, _ = loaded
    profile = read_profile(args.profile)
    if profile is None:
        print(f"danet tables: no profile at {args.profile}; GFLOPs/fps left empty", file=sys.stderr)
    write_tables(df, args.out, profile)
    runs = runs_read(len(df), problems)
    print(f"tables of {runs} in {args.out}/ (main, per_class: .md .tex .csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
