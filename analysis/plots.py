"""Benchmark figures (seaborn/matplotlib), each saved as PNG (200 dpi) and SVG.

Figures:
- miou_ci: val mIoU (%) per variant, mean and 95 % t-interval over seeds (points with bars;
  a variant of one run is its point alone), each seed a small dot beside it, the baseline's
  (none) interval a grey band across the axis; one panel per group (dataset/setting/...)
- learning_curves: per group, (a) the training loss of the fused output (log.jsonl's
  `losses[0]`, comparable across variants with one or three outputs) and (b) the validation
  mIoU (%) of each run's first eval mode at every evaluation; mean over seeds, band ±1 std
- miou_vs_gflops: mean mIoU vs GFLOPs (each run's measured forward cost at the evaluation
  input) per variant with 95 % t-interval bars, the Pareto front of the means dashed (drawn
  when the runs' result.json has a `cost`)
- scaling: peak memory and latency vs feature size, log-log, per variant, with fitted slopes
  (profile rows of scope module, else head, sizes 33..129; needs the profile)
- per_class_iou: heatmap of mean IoU per class and variant
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from analysis.collect import runs_read  # noqa: E402
from analysis.stats import BASELINE, DUAL, group_keys, matched_control, mean_ci  # noqa: E402
from analysis.tables import (  # noqa: E402
    ZOO_NAMES,
    main_table,
    per_class_table,
    read_profile,
    runs_command,
    runs_parser,
    side,
    variant_order,  # noqa: E402
)
from danet.run_folder import read_log  # noqa: E402
from danet.utils import atomic_write_bytes  # noqa: E402

SCALING_SIZES = (33, 129)
FORMATS = ("png", "svg")
DPI = 200
# 8-10 pt text: readable when a 3.5 in figure fills a paper column (7 in: the text width)
RC = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "figure.titlesize": 10,
}
COLUMN_IN, TEXT_IN = 3.5, 7.0
BAND = "±1 std over seeds"
BASELINE_BAND = "baseline-ci"  # gid of the baseline's interval band, for tests and SVG readers
DUAL_BAND = "baseline-dual-ci"  # the dual head's baseline, none (dual), under its own rows
CONTROL_BAND = "control-ci"  # "control-ci:pam": any other control (backbone attention's rows)
BAND_COLOURS = ("0.88", "#cfe0f0", "#f2dcc4", "#d6ebd0", "#e6d8ee")


def _label(df: pd.DataFrame, cols: list[str], among: pd.DataFrame | None = None) -> pd.Series:
    """'dataset/setting/...' of the group columns that vary among the runs `among` (default
    df itself; or the first column), so frames derived from the same runs get equal labels."""
    among = df if among is None else among
    varying = [c for c in cols if c in among and among[c].nunique() > 1] or cols[:1]
    if not varying:
        return pd.Series("", index=df.index, dtype=str)
    return df[varying].astype(str).agg(" / ".join, axis=1)


def _palette(variants: list[str]) -> dict[str, tuple]:
    """One colour per variant, the same in every figure of a report."""
    colours = sns.color_palette("tab10" if len(variants) <= 10 else "tab20", len(variants))
    return dict(zip(variants, colours))


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated by another (lower-or-equal x and higher-or-equal y,
    one strictly), sorted by x: the cheapest way to each accuracy."""
    order = np.lexsort((-y, x))
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


# --- mIoU per variant with intervals -------------------------------------------------------


def miou_points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per group x variant, in variant_order: the group columns, group (label),
    variant, n, mean, low, high (val mIoU in %, the 95 % t-interval of the mean over seeds;
    low and high NaN for one run)."""
    keys = group_keys(df)
    d = df.assign(miou=100 * df["miou"].astype(float), group=_label(df, keys))
    rank = {v: i for i, v in enumerate(variant_order(df))}
    rows = []
    for (group, variant), runs in d.groupby(["group", "variant"], sort=False):
        mean, low, high = mean_ci(runs["miou"].dropna().to_numpy())
        first = runs.iloc[0]
        head = first.get("head", "single")
        control = matched_control(variant, head, first.get("backbone_attention", ""))
        rows.append({**{k: first[k] for k in keys}, "group": group, "variant": variant,
                     "control": control,
                     "n": int(runs["miou"].notna().sum()), "mean": mean, "low": low,
                     "high": high})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out = out.assign(_rank=out["variant"].map(rank))
    groups = list(dict.fromkeys(d["group"]))
    out = out.assign(_group=out["group"].map({g: i for i, g in enumerate(groups)}))
    return out.sort_values(["_group", "_rank"]).drop(columns=["_group", "_rank"])


def _symmetric_limits(values: np.ndarray) -> tuple[float, float]:
    """The data range padded by the same amount below and above (15 %, at least 1 point):
    nothing cropped and no end of the axis stretched to make a gap look bigger."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    pad = max(0.15 * (hi - lo), 1.0)
    return lo - pad, hi + pad


def _seed_count_text(points: pd.DataFrame) -> str:
    counts = sorted(set(points["n"]))
    return f"{counts[0]} seeds" if len(counts) == 1 else "n seeds (n per variant)"


def _draw_baseline(ax: plt.Axes, base: pd.Series | None) -> list[Artist]:
    """The baseline's interval as a band across the axis (a line when it has one run)."""
    if base is None:
        return []
    ax.axhline(base["mean"], color="0.45", lw=0.8, ls="--", zorder=1)
    if math.isnan(base["low"]):
        return [Line2D([], [], color="0.45", lw=0.8, ls="--", label="none: one run")]
    band = ax.axhspan(base["low"], base["high"], color="0.88", zorder=0, lw=0)
    band.set_gid(BASELINE_BAND)
    return [Patch(color="0.88", label="none: 95 % interval")]


def _draw_control_bands(ax: plt.Axes, points: pd.DataFrame) -> list[Artist]:
    """With more than one control, each control's interval as a band under its own rows only
    (the control and the rows compared with it), so a row is read against its control."""
    handles = []
    others = [c for c in dict.fromkeys(points["control"]) if c not in (BASELINE, BASELINE + DUAL)]
    bands = [(BASELINE, BASELINE_BAND), (BASELINE + DUAL, DUAL_BAND),
             *((name, f"{CONTROL_BAND}:{name}") for name in others)]
    for (name, gid), colour in zip(bands, itertools.cycle(BAND_COLOURS)):
        control = points[points["variant"] == name]
        if control.empty or math.isnan(control["low"].iloc[0]):
            continue
        c = control.iloc[0]
        for x in np.flatnonzero((points["control"] == name).to_numpy()):
            ax.add_patch(Rectangle((x - 0.45, c["low"]), 0.9, c["high"] - c["low"], color=colour,
                                   zorder=0, lw=0, gid=gid))
            ax.hlines(c["mean"], x - 0.45, x + 0.45, color="0.45", lw=0.8, ls="--", zorder=1)
        handles.append(Patch(color=colour, label=f"{name}: 95 % interval (its rows)"))
    return handles


def _draw_miou_panel(ax: plt.Axes, points: pd.DataFrame, seeds: pd.DataFrame) -> list[Artist]:
    """Points with interval bars at x = 0, 1, ...; seeds as dots just right of them."""
    x = np.arange(len(points))
    handles = []
    base = points[points["variant"] == BASELINE]
    if (points["control"] != BASELINE).any():
        handles += _draw_control_bands(ax, points)
    else:
        handles += _draw_baseline(ax, base.iloc[0] if len(base) else None)
    with_ci = points["low"].notna().to_numpy()
    if with_ci.any():
        p = points[with_ci]
        yerr = np.vstack([p["mean"] - p["low"], p["high"] - p["mean"]])
        ax.errorbar(x[with_ci], p["mean"], yerr=yerr, fmt="o", color="black", ms=5,
                    capsize=3, lw=1.2, zorder=3)
        handles.append(Line2D([], [], color="black", marker="o", ms=5, label="mean, 95 % CI"))
    if (~with_ci).any():
        p = points[~with_ci]
        ax.plot(x[~with_ci], p["mean"], "o", color="black", mfc="white", ms=5, zorder=3)
        handles.append(Line2D([], [], color="black", marker="o", mfc="white", ls="",
                              ms=5, label="one run: no interval"))
    position = dict(zip(points["variant"], x))
    sx = seeds["variant"].map(position).to_numpy(float) + 0.22
    ax.scatter(sx, seeds["miou"], s=9, color="0.35", zorder=2, lw=0)
    handles.append(Line2D([], [], color="0.35", marker="o", ms=3, ls="", label="single seeds"))
    ax.set_xticks(x, [f"{v}\nn={n}" for v, n in zip(points["variant"], points["n"])])
    ax.set_xlim(-0.5, len(points) - 0.5)
    limits = [points["mean"], points["low"], points["high"], seeds["miou"]]
    if len(base):
        limits += [base["low"], base["high"]]
    ax.set_ylim(*_symmetric_limits(pd.concat(limits).to_numpy(float)))
    return handles


def fig_miou_ci(df: pd.DataFrame) -> plt.Figure | None:
    points = miou_points(df)
    if points.empty:
        return None
    keys = group_keys(df)
    runs = df.assign(miou=100 * df["miou"].astype(float), group=_label(df, keys))
    groups = list(dict.fromkeys(points["group"]))
    most = max(points.groupby("group").size())
    width = max(COLUMN_IN, 1.0 + 0.55 * most)
    fig, axes = plt.subplots(
        1, len(groups), figsize=(width * len(groups), 3.4), squeeze=False, layout="constrained"
    )
    handles: dict[str, Artist] = {}
    for ax, g in zip(axes[0], groups):
        drawn = _draw_miou_panel(
            ax, points[points["group"] == g], runs[runs["group"] == g].dropna(subset=["miou"])
        )
        handles.update((h.get_label(), h) for h in drawn)  # every kind drawn in any panel
        ax.set(ylabel="val mIoU (%)" if ax is axes[0][0] else "")
        if len(groups) > 1:
            ax.set_title(g)
    # below the axes: never over a point, whatever the data
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncol=2)
    what = f"val mIoU: mean and 95 % t-interval over {_seed_count_text(points)}"
    if len(groups) > 1:
        fig.suptitle(what)
    else:
        axes[0][0].set_title(what)
    return fig


# --- mIoU vs compute ------------------------------------------------------------------------


def _with_intervals(main: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """main's rows with GFLOPs, joined to their mIoU t-interval (low, high) and group label."""
    data = main.dropna(subset=["GFLOPs", "mIoU"]).rename(
        columns={v: k for k, v in ZOO_NAMES.items()}
    )
    points = miou_points(df)
    on = [c for c in [*group_keys(df), "variant"] if c in data and c in points]
    return data.merge(points[[*on, "group", "low", "high"]], on=on, how="left")


def fig_miou_vs_gflops(main: pd.DataFrame, df: pd.DataFrame) -> plt.Figure | None:
    data = _with_intervals(main, df)
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(COLUMN_IN * 1.5, 3.6))
    colours = _palette(variant_order(df))
    groups = list(dict.fromkeys(data["group"]))
    markers = dict(zip(groups, "osD^vP*Xh"))
    for r in data.itertuples():
        low = r.mIoU - r.low if r.low == r.low else 0.0  # one run: the point alone
        high = r.high - r.mIoU if r.high == r.high else 0.0
        ax.errorbar(r.GFLOPs, r.mIoU, yerr=[[low], [high]], fmt=markers.get(r.group, "o"),
                    color=colours[r.variant], ms=6, capsize=3, lw=1.1, zorder=3)
        ax.annotate(r.variant, (r.GFLOPs, r.mIoU), xytext=(4, 4), textcoords="offset points",
                    fontsize=7.5)
    for _, g in data.groupby("group", sort=False):
        idx = pareto_front(g["GFLOPs"].to_numpy(float), g["mIoU"].to_numpy(float))
        ax.plot(g["GFLOPs"].to_numpy()[idx], g["mIoU"].to_numpy()[idx], "k--", lw=1, zorder=1)
    handles = [Line2D([], [], color="k", ls="--", lw=1, label="Pareto front of the means")]
    if len(groups) > 1:
        handles += [Line2D([], [], color="0.3", marker=markers[g], ls="", label=g) for g in groups]
    ax.legend(handles=handles, loc="best")
    ax.margins(x=0.1)  # room for the names beside the outermost points
    ax.set(
        xlabel="GFLOPs (forward, per image at the evaluation input)",
        ylabel="val mIoU (%)",
        title="mIoU vs compute: mean and 95 % t-interval over seeds",
    )
    fig.tight_layout()
    return fig


# --- scaling and per-class figures -----------------------------------------------------------


def fig_scaling(profile: pd.DataFrame) -> plt.Figure | None:
    lo, hi = SCALING_SIZES
    profile = profile.assign(size=profile["size"].map(side))
    p = profile[(profile["size"] >= lo) & (profile["size"] <= hi)]
    p = p[p["scope"] == "module"] if (p["scope"] == "module").any() else p[p["scope"] == "head"]
    if p.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(TEXT_IN, 3.2))
    for ax, col, name in zip(
        axes, ["mem_fwdbwd_mb", "latency_ms"], ["peak memory fwd+bwd (MB)", "latency (ms)"]
    ):
        d = p.dropna(subset=[col]) if col in p else p.iloc[:0].assign(**{col: 0.0})
        d = d[d[col] > 0]
        if d.empty:
            ax.set_title(f"no {col} in the profile")
            continue
        labels = {}
        for v, g in d.groupby("variant"):
            if g["size"].nunique() > 1:
                slope = np.polyfit(np.log(g["size"]), np.log(g[col]), 1)[0]
                labels[v] = f"{v} (slope {slope:.1f})"
            else:
                labels[v] = v
        d = d.assign(variant=d["variant"].map(labels))
        sns.lineplot(d, x="size", y=col, hue="variant", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", xlabel="feature side (N = side²)", ylabel=name)
        sizes = sorted(d["size"].unique())
        ax.set_xticks(sizes, [str(int(x)) for x in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=6.5)
    fig.suptitle("scaling with resolution (slope on side: 2 = O(N), 4 = O(N²))")
    fig.tight_layout()
    return fig


def fig_per_class(per_class: pd.DataFrame) -> plt.Figure | None:
    front = ["Method", "Dataset", "Setting", "Backbone", "Crop Size", "Lr schd", "Numerics"]
    front = [c for c in front if c in per_class]
    classes = [c for c in per_class.columns if c not in front]
    if not classes:
        return None
    index = _label(per_class, front[1:]) + " · " + per_class["Method"].astype(str)
    if per_class[front[1:]].drop_duplicates().shape[0] <= 1:
        index = per_class["Method"].astype(str)
    mat = per_class[classes].set_axis(index, axis=0).astype(float)
    fig, ax = plt.subplots(figsize=(1.8 + 0.45 * len(classes), 1.2 + 0.3 * len(mat)))
    sns.heatmap(mat, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "IoU (%)"},
                annot_kws={"fontsize": 7}, ax=ax)
    ax.set(xlabel="class", ylabel="", title="IoU per class (mean over seeds)")
    fig.tight_layout()
    return fig


# --- learning curves ---------------------------------------------------------------------------


def _log_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training steps, eval events) of one log.jsonl (read_log). A step's loss is its fused
    output's cross-entropy (`losses[0]`), `loss` only for lines without `losses`."""
    steps, evals = [], []
    for rec in records:
        if "iteration" not in rec:
            continue
        if rec.get("event") == "eval" and "miou" in rec:
            evals.append({"iteration": rec["iteration"], "mode": rec.get("mode", ""),
                          "miou": 100 * float(rec["miou"])})
        elif "event" not in rec and ("losses" in rec or "loss" in rec):
            parts = rec.get("losses")
            loss = parts[0] if isinstance(parts, list) and parts else rec.get("loss")
            if loss is not None:
                steps.append({"iteration": rec["iteration"], "loss": float(loss)})
    return steps, evals


def read_logs(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From every run's log.jsonl (next to its result.json): training steps (columns path,
    variant, seed, the group columns, iteration, loss of the fused output) and evaluations
    of the run's first eval mode (..., iteration, mode, miou in %). Of an iteration logged
    twice (a resumed run) the last line is kept."""
    keys = group_keys(df)
    steps, evals = [], []
    for row in df.itertuples():
        s, e = _log_records(read_log(Path(row.path)))
        tags = {"path": row.path, "variant": row.variant, "seed": row.seed,
                **{k: getattr(row, k) for k in keys}}
        if s:
            steps.append(pd.DataFrame(s).drop_duplicates("iteration", keep="last").assign(**tags))
        if e:
            e = pd.DataFrame(e)
            e = e[e["mode"] == e["mode"].iloc[0]].drop_duplicates("iteration", keep="last")
            evals.append(e.assign(**tags))
    base = ["path", "variant", "seed", *keys, "iteration"]
    return (
        pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(columns=[*base, "loss"]),
        pd.concat(evals, ignore_index=True)
        if evals
        else pd.DataFrame(columns=[*base, "mode", "miou"]),
    )


def learning_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The training steps of read_logs: loss is the fused output's cross-entropy."""
    return read_logs(df)[0]


def val_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The evaluations of read_logs: mIoU (%) of each run's first eval mode per iteration."""
    return read_logs(df)[1]


def curve_summary(curves: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one run) and n of `value` over seeds per group column,
    variant and iteration: what fig_learning_curves draws as lines and bands."""
    keys = [*group_keys(curves), "variant", "iteration"]
    if curves.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n"])
    return (
        curves.groupby(keys, dropna=False)[value]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
        .sort_values(keys)
    )


def _draw_curves(
    ax: plt.Axes, summary: pd.DataFrame, order: list[str], colours: dict, markers: bool
) -> None:
    for v in [v for v in order if v in set(summary["variant"])]:
        s = summary[summary["variant"] == v]
        x, m, sd = s["iteration"].to_numpy(float), s["mean"].to_numpy(float), s["std"].to_numpy()
        ax.plot(x, m, color=colours[v], lw=1.2, marker="o" if markers else None, ms=3.5, label=v)
        sd = np.nan_to_num(sd.astype(float))  # one seed: no band
        ax.fill_between(x, m - sd, m + sd, color=colours[v], alpha=0.2, lw=0)


def fig_learning_curves(
    df: pd.DataFrame, curves: pd.DataFrame, evals: pd.DataFrame
) -> plt.Figure | None:
    if curves.empty and evals.empty:
        return None
    keys = group_keys(df)
    order = variant_order(df)
    colours = _palette(order)
    loss, val = curve_summary(curves, "loss"), curve_summary(evals, "miou")
    label = {"loss": _label(loss, keys, df), "val": _label(val, keys, df)}
    groups = list(dict.fromkeys([*label["loss"], *label["val"]]))
    modes = sorted(set(evals["mode"])) if not evals.empty else []
    mode = modes[0] if len(modes) == 1 else "first eval mode of each run"
    fig, axes = plt.subplots(
        len(groups), 2, figsize=(TEXT_IN, 0.4 + 2.6 * len(groups)), squeeze=False,
        sharex="row", layout="constrained",
    )
    for (ax_loss, ax_val), g in zip(axes, groups):
        prefix = f"{g}\n" if len(groups) > 1 else ""
        _draw_curves(ax_loss, loss[label["loss"] == g], order, colours, markers=False)
        _draw_curves(ax_val, val[label["val"] == g], order, colours, markers=True)
        ax_loss.set(xlabel="iteration", ylabel=f"{prefix}cross-entropy")
        ax_val.set(xlabel="iteration", ylabel="val mIoU (%)")
        if loss[label["loss"] == g].empty:
            ax_loss.text(0.5, 0.5, "no training lines in log.jsonl", ha="center",
                         transform=ax_loss.transAxes)
        if val[label["val"] == g].empty:
            ax_val.text(0.5, 0.5, "no eval events in log.jsonl", ha="center",
                        transform=ax_val.transAxes)
    axes[0][0].set_title("(a) training loss of the fused output")
    axes[0][1].set_title(f"(b) validation mIoU ({mode}), markers: evaluations")
    fig.suptitle(f"mean over seeds, band {BAND}")
    handles = [Line2D([], [], color=colours[v], lw=1.5, label=v) for v in order]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6))
    return fig


# --- writing -----------------------------------------------------------------------------------


def make_figures(
    df: pd.DataFrame, profile: pd.DataFrame | None = None
) -> tuple[dict[str, plt.Figure], list[str]]:
    """name -> matplotlib Figure for every figure the data allows, and notes on the skipped."""
    figs, notes = {}, []
    main = main_table(df)  # GFLOPs: each run's measured cost (result.json `cost`)
    candidates = {
        "miou_vs_gflops": lambda: fig_miou_vs_gflops(main, df),
        "scaling": lambda: fig_scaling(profile) if profile is not None else None,
        "per_class_iou": lambda: fig_per_class(per_class_table(df)),
        "learning_curves": lambda: fig_learning_curves(df, *read_logs(df)),
        "miou_ci": lambda: fig_miou_ci(df),
    }
    why = {
        "miou_vs_gflops": "no GFLOPs for these runs (no measured `cost` in their result.json)",
        "scaling": "no profile.csv (or no module/head rows at sizes 33..129)",
        "per_class_iou": "no per-class IoU in the results",
        "learning_curves": "no log.jsonl with training steps or evaluations next to the results",
        "miou_ci": "no runs",
    }
    for name, make in candidates.items():
        with plt.rc_context(RC):
            fig = make()
        if fig is None:
            notes.append(f"{name}: skipped ({why[name]})")
        else:
            figs[name] = fig
    return figs, notes


def figure_bytes(fig: plt.Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def write_plots(
    df: pd.DataFrame, out: Path, profile: pd.DataFrame | None = None
) -> tuple[list[Path], list[str]]:
    """Every figure as <out>/<name>.png and .svg; returns the paths written and the notes."""
    figs, notes = make_figures(df, profile)
    written = []
    for name, fig in figs.items():
        for fmt in FORMATS:
            path = out / f"{name}.{fmt}"
            atomic_write_bytes(path, figure_bytes(fig, fmt))
            written.append(path)
        plt.close(fig)
    return written, notes


def parser() -> argparse.ArgumentParser:
    return runs_parser("danet plots", __doc__, "reports/plots")


def main(argv: list[str] | None = None) -> int:
    loaded = runs_command(parser(), argv)
    if loaded is None:
        return 1
    args, df, problems, _ = loaded
    written, notes = write_plots(df, args.out, read_profile(args.profile))
    for note in notes:
        print(f"danet plots: {note}", file=sys.stderr)
    print(f"{len(written)} figure files of {runs_read(len(df), problems)} in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
