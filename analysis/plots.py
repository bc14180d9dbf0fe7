"""Benchmark figures (seaborn), each saved as PNG and SVG.

    python -m analysis.plots RUNS_DIR [--out reports/plots] [--profile reports/profile.csv]

- miou_vs_gflops: mean mIoU vs GFLOPs per variant, Pareto front marked (needs the profile)
- scaling: peak memory and latency vs feature size, log-log, per variant, with fitted slopes
  (profile rows of scope module, else head, sizes 33..129; needs the profile)
- per_class_iou: heatmap of mean IoU per class and variant
- learning_curves: training loss vs iteration from each run's log.jsonl, mean and std band
  over seeds, one line per variant
- miou_bars: mean mIoU per variant with std-over-seeds error bars, single seeds as dots
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.ablation import variant_order  # noqa: E402
from analysis.collect import runs_read  # noqa: E402
from analysis.stats import group_keys  # noqa: E402
from analysis.tables import (  # noqa: E402
    main_table,
    per_class_table,
    read_profile,
    runs_command,
    side,
)
from danet.utils import atomic_write_bytes  # noqa: E402

SCALING_SIZES = (33, 129)
FORMATS = ("png", "svg")


def _label(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """'dataset/setting/...' of the group columns that vary (or the first one)."""
    varying = [c for c in cols if c in df and df[c].nunique() > 1] or cols[:1]
    return df[varying].astype(str).agg(" / ".join, axis=1)


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


def fig_miou_vs_gflops(main: pd.DataFrame):
    data = main.dropna(subset=["GFLOPs", "mIoU"])
    if data.empty:
        return None
    data = data.assign(
        group=_label(data, ["Dataset", "Setting", "Backbone", "Crop Size", "Numerics"])
    )
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    style = "group" if data["group"].nunique() > 1 else None
    sns.scatterplot(data, x="GFLOPs", y="mIoU", hue="Method", style=style, s=70, ax=ax)
    for r in data.itertuples():
        ax.annotate(r.Method, (r.GFLOPs, r.mIoU), xytext=(4, 4), textcoords="offset points")
    for _, g in data.groupby("group"):
        idx = pareto_front(g["GFLOPs"].to_numpy(float), g["mIoU"].to_numpy(float))
        ax.plot(g["GFLOPs"].to_numpy()[idx], g["mIoU"].to_numpy()[idx], "k--", lw=1, zorder=0)
    ax.plot([], [], "k--", lw=1, label="Pareto front")
    ax.legend(fontsize=7, loc="best")
    ax.set(xlabel="GFLOPs (profile)", ylabel="val mIoU (%)", title="mIoU vs compute")
    return fig


def fig_scaling(profile: pd.DataFrame):
    lo, hi = SCALING_SIZES
    profile = profile.assign(size=profile["size"].map(side))
    p = profile[(profile["size"] >= lo) & (profile["size"] <= hi)]
    p = p[p["scope"] == "module"] if (p["scope"] == "module").any() else p[p["scope"] == "head"]
    if p.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
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
        ax.legend(fontsize=7)
    fig.suptitle("scaling with resolution (slope on side: 2 = O(N), 4 = O(N²))")
    fig.tight_layout()
    return fig


def fig_per_class(per_class: pd.DataFrame):
    front = ["Method", "Dataset", "Setting", "Backbone", "Crop Size", "Lr schd", "Numerics"]
    front = [c for c in front if c in per_class]
    classes = [c for c in per_class.columns if c not in front]
    if not classes:
        return None
    index = _label(per_class, front[1:]) + " · " + per_class["Method"].astype(str)
    if per_class[front[1:]].drop_duplicates().shape[0] <= 1:
        index = per_class["Method"].astype(str)
    mat = per_class[classes].set_axis(index, axis=0).astype(float)
    fig, ax = plt.subplots(figsize=(2.5 + 0.55 * len(classes), 2.5 + 0.4 * len(mat)))
    sns.heatmap(mat, annot=True, fmt=".1f", cmap="viridis", cbar_kws={"label": "IoU (%)"}, ax=ax)
    ax.set(xlabel="class", ylabel="", title="IoU per class (mean over seeds)")
    fig.tight_layout()
    return fig


def learning_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Training-step rows of every run's log.jsonl (next to its result.json): columns
    path, variant, group, seed, iteration, loss; event lines skipped, and of an iteration
    logged twice (a resumed run) the last one kept."""
    keys = group_keys(df)
    frames = []
    for row in df.itertuples():
        log = Path(row.path) / "log.jsonl"
        if not log.is_file():
            continue
        recs = []
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "event" not in rec and "loss" in rec and "iteration" in rec:
                recs.append({"iteration": rec["iteration"], "loss": rec["loss"]})
        if recs:
            f = pd.DataFrame(recs).drop_duplicates("iteration", keep="last")
            frames.append(f.assign(path=row.path, variant=row.variant, seed=row.seed))
            for k in keys:
                frames[-1][k] = getattr(row, k)
    if not frames:
        return pd.DataFrame(columns=["path", "variant", "seed", "iteration", "loss"])
    return pd.concat(frames, ignore_index=True)


def fig_learning_curves(df: pd.DataFrame, curves: pd.DataFrame):
    if curves.empty:
        return None
    keys = group_keys(curves)
    curves = curves.assign(group=_label(curves, keys))
    groups = list(dict.fromkeys(curves["group"]))
    order = variant_order(df)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, g in zip(axes[0], groups):
        sub = curves[curves["group"] == g]
        hue_order = [v for v in order if v in set(sub["variant"])]
        sns.lineplot(
            sub, x="iteration", y="loss", hue="variant", hue_order=hue_order,
            errorbar="sd", ax=ax,
        )  # fmt: skip
        ax.set(title=g if len(groups) > 1 else "training loss (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def fig_miou_bars(df: pd.DataFrame):
    keys = group_keys(df)
    d = df.assign(miou=100 * df["miou"], group=_label(df, keys))
    order = variant_order(df)
    groups = list(dict.fromkeys(d["group"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(order), 3.8))
    common = dict(x="variant", y="miou", hue="group", hue_order=groups, order=order, ax=ax)
    sns.barplot(d, errorbar="sd", capsize=0.15, alpha=0.75, **common)
    sns.stripplot(d, dodge=True, palette="dark:black", size=4, legend=False, **common)
    ax.set(xlabel="attention variant", ylabel="val mIoU (%)", title="mean ± std over seeds")
    ax.set_ylim(max(0, d["miou"].min() - 10), min(100, d["miou"].max() + 5))
    if len(groups) <= 1 and ax.get_legend():
        ax.get_legend().remove()
    fig.tight_layout()
    return fig


def make_figures(
    df: pd.DataFrame, profile: pd.DataFrame | None = None
) -> tuple[dict[str, plt.Figure], list[str]]:
    """name -> matplotlib Figure for every figure the data allows, and notes on the skipped."""
    figs, notes = {}, []
    main = main_table(df, profile)
    candidates = {
        "miou_vs_gflops": lambda: fig_miou_vs_gflops(main) if profile is not None else None,
        "scaling": lambda: fig_scaling(profile) if profile is not None else None,
        "per_class_iou": lambda: fig_per_class(per_class_table(df)),
        "learning_curves": lambda: fig_learning_curves(df, learning_curves(df)),
        "miou_bars": lambda: fig_miou_bars(df),
    }
    why = {
        "miou_vs_gflops": "no profile.csv (or no GFLOPs in it)",
        "scaling": "no profile.csv (or no module/head rows at sizes 33..129)",
        "per_class_iou": "no per-class IoU in the results",
        "learning_curves": "no log.jsonl with training steps next to the results",
        "miou_bars": "no runs",
    }
    for name, make in candidates.items():
        fig = make()
        if fig is None:
            notes.append(f"{name}: skipped ({why[name]})")
        else:
            figs[name] = fig
    return figs, notes


def figure_bytes(fig: plt.Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight")
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


def main(argv: list[str] | None = None) -> int:
    loaded = runs_command("danet plots", __doc__, "reports/plots", argv)
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
