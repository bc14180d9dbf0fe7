"""Ablation table (mean ± std over seeds, n, Δ vs the baseline) and its seaborn figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from danet.utils import atomic_write_bytes  # noqa: E402

GROUP = ["dataset", "setting", "backbone", "iterations"]
BASELINE = "none"


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, setting, backbone, iterations, variant); mIoU in percent."""
    df = df.assign(miou=100 * df["miou"], pixel_accuracy=100 * df["pixel_accuracy"])
    table = (
        df.groupby(GROUP + ["variant"], sort=False)
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
    table["delta_vs_none"] = table.apply(
        lambda r: r["miou_mean"] - base.get(tuple(r[g] for g in GROUP), float("nan")), axis=1
    )
    return table


def to_markdown(table: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "setting": table["setting"],
            "backbone": table["backbone"],
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
    return shown.to_markdown(index=False)


def plot(df: pd.DataFrame, path: Path) -> None:
    df = df.assign(miou=100 * df["miou"])
    order = [v for v in ["none", "pam", "cam", "danet"] if v in set(df["variant"])]
    order += sorted(set(df["variant"]) - set(order))
    settings = list(dict.fromkeys(df["setting"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(order), 3.6))
    sns.barplot(
        df,
        x="variant",
        y="miou",
        hue="setting",
        hue_order=settings,
        order=order,
        errorbar="sd",
        capsize=0.15,
        alpha=0.75,
        ax=ax,
    )
    sns.stripplot(
        df,
        x="variant",
        y="miou",
        hue="setting",
        hue_order=settings,
        order=order,
        dodge=True,
        color="black",
        size=4,
        legend=False,
        ax=ax,
    )
    ax.set(
        xlabel="attention variant",
        ylabel="val mIoU (%)",
        title="mean ± std over seeds (dots: single seeds)",
    )
    lo = df["miou"].min()
    ax.set_ylim(max(0, lo - 10), min(100, df["miou"].max() + 5))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()


def write_reports(df: pd.DataFrame, out: Path, title: str, note: str = "") -> pd.DataFrame:
    """reports/<name>.md, .csv and .png from the runs in df."""
    table = ablation_table(df)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out.with_suffix(".csv"), table.to_csv(index=False).encode())
    md = f"# {title}\n\n{to_markdown(table)}\n"
    if note:
        md += f"\n{note}\n"
    atomic_write_bytes(out.with_suffix(".md"), md.encode())
    plot(df, out.with_suffix(".png"))
    return table
