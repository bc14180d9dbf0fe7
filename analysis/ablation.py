"""Ablation table (mean ± std over seeds, n, Δ vs the baseline), per-class IoU, and a figure."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.stats import BASELINE  # noqa: E402
from analysis.stats import GROUP as _GROUP  # noqa: E402
from danet.utils import atomic_write_bytes  # noqa: E402

GROUP = list(_GROUP)  # the runs pooled into one row (stats.GROUP, the same for every table)

ABLATION_ORDER = ("none", "pam", "cam", "danet")  # the DANet paper's Table 1


def variant_order(df: pd.DataFrame, order: Sequence[str] = ()) -> list[str]:
    """The baseline first, then `order` (a grid's axis), Table 1's order, the rest by name."""
    present = set(df["variant"])
    ordered = [BASELINE, *order, *ABLATION_ORDER, *sorted(present)]
    return [v for v in dict.fromkeys(ordered) if v in present]


def _sorted(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    return df.sort_values(
        GROUP + ["variant"], key=lambda s: s.map(rank) if s.name == "variant" else s
    )


def ablation_table(df: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (dataset, setting, backbone, iterations, variant); mIoU in percent."""
    df = df.assign(miou=100 * df["miou"], pixel_accuracy=100 * df["pixel_accuracy"])
    table = (
        df.groupby(GROUP + ["variant"])
        .agg(
            miou_mean=("miou", "mean"),
            miou_std=("miou", "std"),
            n=("seed", "nunique"),
            pixel_acc=("pixel_accuracy", "mean"),
            params_m=("params", "first"),
            train_time_s=("train_time_s", "mean"),
        )
        .reset_index()
    )
    table["params_m"] = table["params_m"] / 1e6
    base = table[table["variant"] == BASELINE].set_index(GROUP)["miou_mean"]
    table["delta_vs_none"] = [
        row.miou_mean - base.get(tuple(getattr(row, g) for g in GROUP), float("nan"))
        for row in table.itertuples()
    ]
    return _sorted(table, variant_order(df, order)).reset_index(drop=True)


def per_class_table(df: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """Mean IoU (%) per class over seeds, one row per setting and variant."""
    cols = [c for c in df.columns if c.startswith("iou/")]
    table = (100 * df.groupby(GROUP + ["variant"])[cols].mean()).reset_index()
    table = _sorted(table, variant_order(df, order)).reset_index(drop=True)
    return table.rename(columns={c: c.removeprefix("iou/") for c in cols})


def _with_numerics(shown: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """A numerics column after the setting, where the runs differ in it (fp32, bf16, ...)."""
    if table["numerics"].nunique() > 1:
        shown.insert(1, "numerics", table["numerics"])
    return shown


def to_markdown(table: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "setting": table["setting"],
            "backbone": table["backbone"],
            "iters": table["iterations"],
            "variant": table["variant"],
            "mIoU (%)": [
                f"{m:.2f} ± {s:.2f}" if s == s else f"{m:.2f}"
                for m, s in zip(table["miou_mean"], table["miou_std"])
            ],
            "n": table["n"],
            "Δ vs none": [f"{d:+.2f}" if d == d else "" for d in table["delta_vs_none"]],
            "pixel acc (%)": table["pixel_acc"].map("{:.2f}".format),
            "params (M)": table["params_m"].map("{:.3f}".format),
            "train time (s)": table["train_time_s"].map("{:.0f}".format),
        }
    )
    return _with_numerics(shown, table).to_markdown(index=False, disable_numparse=True)


def per_class_markdown(table: pd.DataFrame) -> str:
    classes = [c for c in table.columns if c not in GROUP + ["variant"]]
    shown = table[["setting", "variant"]].copy()
    for c in classes:
        shown[c] = table[c].map("{:.1f}".format)
    return _with_numerics(shown, table).to_markdown(index=False, disable_numparse=True)


def plot(df: pd.DataFrame, path: Path, order: Sequence[str] = ()) -> None:
    df = df.assign(miou=100 * df["miou"])
    if df["numerics"].nunique() > 1:
        df = df.assign(setting=df["setting"] + " · " + df["numerics"])
    order = variant_order(df, order)
    settings = list(dict.fromkeys(df["setting"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(order), 3.6))
    common = dict(x="variant", y="miou", hue="setting", hue_order=settings, order=order, ax=ax)
    sns.barplot(df, errorbar="sd", capsize=0.15, alpha=0.75, **common)
    sns.stripplot(df, dodge=True, palette="dark:black", size=4, legend=False, **common)
    ax.set(
        xlabel="attention variant",
        ylabel="val mIoU (%)",
        title="mean ± std over seeds (dots: single seeds)",
    )
    ax.set_ylim(max(0, df["miou"].min() - 10), min(100, df["miou"].max() + 5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_reports(
    df: pd.DataFrame, out: Path, title: str, order: Sequence[str] = ()
) -> pd.DataFrame:
    """<out>.md (tables), <out>.csv (the ablation table) and <out>.png from the runs in df."""
    table = ablation_table(df, order)
    atomic_write_bytes(out.with_suffix(".csv"), table.to_csv(index=False).encode())
    md = (
        f"# {title}\n\n{to_markdown(table)}\n\n"
        f"Per-class IoU (%), mean over seeds:\n\n{per_class_markdown(per_class_table(df, order))}\n"
    )
    atomic_write_bytes(out.with_suffix(".md"), md.encode())
    plot(df, out.with_suffix(".png"), order)
    return table
