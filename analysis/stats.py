"""Statistics over seeds: mean, sample std and n per group, and Δ vs a baseline with a 95 % CI.

Pure functions on DataFrames (one row per run, as `analysis.collect.collect` returns them).

The interval for Δ = mean(variant) - mean(baseline) within a group:

- **paired-t** when the variant and the baseline were run with the same seeds (n >= 2):
  the per-seed differences d_i, mean(d) ± t_{(1+level)/2, n-1} * sd(d) / sqrt(n)
  (`scipy.stats.t`; sd is the sample standard deviation).
- **bootstrap** otherwise (different seeds, or only one side paired): each side is resampled
  with replacement `n_boot` times with a fixed `numpy.random.default_rng(seed)`, the
  difference of the resampled means is taken, and the interval is its
  ((1-level)/2, (1+level)/2) percentiles. Deterministic for a given seed.
- **n/a** when either side has a single run (no spread to estimate), or for the baseline.

`ci_includes_zero` is True when ci_low <= 0 <= ci_high (the difference is not resolved at
that level), False when it excludes zero, and missing (NA) without an interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

BASELINE = "none"
GROUP = ("dataset", "setting", "backbone", "crop_size", "iterations", "numerics")
LEVEL = 0.95
N_BOOT = 10_000
BOOT_SEED = 0


def group_keys(df: pd.DataFrame, group: Sequence[str] = GROUP) -> list[str]:
    """The grouping columns of `group` that df has."""
    return [g for g in group if g in df.columns]


def mean_ci(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of one variant's mean over its runs (seeds); low and
    high NaN for fewer than two runs."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = _st.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return mean, float(mean - half), float(mean + half)


def paired_t_ci(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of the t-interval on paired differences; low/high NaN for n < 2."""
    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean()) if d.size else float("nan")
    if d.size < 2:
        return mean, float("nan"), float("nan")
    half = _st.t.ppf((1 + level) / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return mean, float(mean - half), float(mean + half)


def bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): percentile bootstrap of the difference of means,
    each sample resampled independently with replacement; deterministic for a given seed."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return delta, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    bx = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    by = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    lo, hi = np.percentile(bx - by, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return delta, float(lo), float(hi)


def delta_ci(
    variant: pd.Series,
    baseline: pd.Series,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> tuple[float, float, float, str]:
    """(Δ, low, high, method) for two Series of one metric indexed by seed.

    Paired t when both have the same seeds (at least two), else the bootstrap; method "n/a"
    (no interval) when a side has one run only. A seed run twice is averaged first."""
    v = variant.groupby(level=0).mean()
    b = baseline.groupby(level=0).mean()
    if len(v) >= 2 and set(v.index) == set(b.index):
        d = v - b.reindex(v.index)
        return (*paired_t_ci(d.to_numpy(), level), "paired-t")
    if len(v) < 2 or len(b) < 2:
        return float(v.mean() - b.mean()), float("nan"), float("nan"), "n/a"
    return (*bootstrap_ci(v.to_numpy(), b.to_numpy(), level, n_boot, seed), "bootstrap")


def summarize(
    df: pd.DataFrame,
    value: str = "miou",
    group: Sequence[str] = GROUP,
    baseline: str = BASELINE,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> pd.DataFrame:
    """One row per group x variant: mean, std (sample, ddof=1; NaN for one run), n (runs),
    seeds (sorted, comma-separated), delta (vs the baseline variant of the same group),
    ci_low, ci_high, ci_method (paired-t | bootstrap | n/a | baseline | no baseline) and
    ci_includes_zero (boolean, NA without an interval). Values keep df's scale."""
    keys = group_keys(df, group)
    rows = []
    for gvals, sub in df.groupby(keys, sort=True, dropna=False) if keys else [((), df)]:
        gvals = gvals if isinstance(gvals, tuple) else (gvals,)
        base = sub[sub["variant"] == baseline]
        base_vals = base.set_index("seed")[value].astype(float).dropna()
        for variant, runs in sub.groupby("variant", sort=True):
            vals = runs.set_index("seed")[value].astype(float).dropna()
            row = dict(zip(keys, gvals))
            row.update(
                variant=variant,
                mean=float(vals.mean()) if len(vals) else float("nan"),
                std=float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                n=int(len(vals)),
                seeds=",".join(str(s) for s in sorted(vals.index.unique())),
            )
            if variant == baseline:
                row.update(delta=0.0, ci_low=np.nan, ci_high=np.nan, ci_method="baseline")
            elif base_vals.empty or vals.empty:
                row.update(delta=np.nan, ci_low=np.nan, ci_high=np.nan, ci_method="no baseline")
            else:
                d, lo, hi, method = delta_ci(vals, base_vals, level, n_boot, seed)
                row.update(delta=d, ci_low=lo, ci_high=hi, ci_method=method)
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    has_ci = out["ci_low"].notna() & out["ci_high"].notna()
    flag = (out["ci_low"] <= 0) & (out["ci_high"] >= 0)
    out["ci_includes_zero"] = pd.array(
        [bool(f) if h else pd.NA for f, h in zip(flag, has_ci)], dtype="boolean"
    )
    return out
