"""Statistics over seeds: mean, sample std and n per group, and Δ vs a baseline with a 95 % CI,
a p-value, its Holm correction and a verdict.

Pure functions on DataFrames (one row per run, as `analysis.collect.collect` returns them).
Within a group (the `GROUP` columns df has), Δ = mean(variant) - mean(baseline). A seed run
twice is averaged first, so each seed counts once on each side. The interval for Δ:

- **paired-t** when every seed of the variant has a baseline run with the same seed, and there
  are at least 2 such pairs. Pairing is real only with the same seed: two runs of one seed
  share the data order and the initialisation of the parts the variants have in common, so
  the per-seed difference removes that seed's luck from both sides. The pairs are the
  variant's seeds: Δ is the mean of the paired differences d_i, and baseline seeds that the
  variant lacks are left out of Δ and of the interval (Δ can therefore differ from the
  difference of the two means shown in `mean`). Interval and p-value:
  `scipy.stats.ttest_rel(variant, baseline)`, i.e. mean(d) ± t_{(1+level)/2, n-1} * sd(d) /
  sqrt(n).
- **welch** otherwise (a variant seed without a baseline run of that seed): the two arms are
  independent samples, and their variances need not be equal, so Welch's t-interval with the
  Welch-Satterthwaite degrees of freedom: `scipy.stats.ttest_ind(variant, baseline,
  equal_var=False)`, its `.confidence_interval(level)` and its p-value. Needs >= 2 seeds on
  each side.
- **n/a** when a side has a single seed (no spread to estimate): no interval, p NaN.

There is no bootstrap: with 2-5 values per arm a percentile bootstrap's interval is a fraction
of the t-interval's width and far below its stated coverage; a t-interval is exact for normal
errors and honest (wide) with few seeds.

`p_holm`: Holm's step-down correction of `p_value` over the variants compared with the same
baseline within one group (the rows with a finite p): the k-th smallest of m p-values becomes
max over j <= k of min(1, (m - j + 1) * p_(j)). It bounds the chance of any false "better" or
"worse" among them at 1 - level.

`verdict`: "better" when p_holm < 1 - level and Δ > 0, "worse" when p_holm < 1 - level and
Δ < 0, else "inconclusive" (n/a and no-baseline rows included); "baseline" for the baseline.
A CI that includes 0 means p >= 1 - level (the interval and the test are the same t), so such
a row is always inconclusive, whatever the correction.

`ci_includes_zero` is True when ci_low <= 0 <= ci_high (the difference is not resolved at
that level), False when it excludes zero, and missing (NA) without an interval;
`ci_halfwidth` is (ci_high - ci_low) / 2 (NaN without an interval).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

BASELINE = "none"
GROUP = ("dataset", "setting", "backbone", "crop_size", "iterations", "numerics")
LEVEL = 0.95
METHODS = ("paired-t", "welch", "n/a", "baseline", "no baseline")
VERDICTS = ("better", "worse", "inconclusive", "baseline")


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


def _t_result(result, level: float) -> tuple[float, float, float]:
    """(low, high, p) of a scipy t-test result."""
    ci = result.confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high), float(result.pvalue)


def delta_ci(
    variant: pd.Series, baseline: pd.Series, level: float = LEVEL
) -> tuple[float, float, float, float, str]:
    """(Δ, low, high, p, method) for two Series of one metric indexed by seed; see the module
    docstring for which method applies. A seed run twice is averaged first."""
    v = variant.groupby(level=0).mean()
    b = baseline.groupby(level=0).mean()
    # identical values give a zero-width interval (or NaN): scipy's precision warning adds nothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(v) >= 2 and set(v.index) <= set(b.index):
            paired = b.reindex(v.index)  # the variant's seeds only: extra baseline seeds unused
            res = _st.ttest_rel(v.to_numpy(), paired.to_numpy())
            return float((v - paired).mean()), *_t_result(res, level), "paired-t"
        delta = float(v.mean() - b.mean())
        if len(v) < 2 or len(b) < 2:
            return delta, float("nan"), float("nan"), float("nan"), "n/a"
        res = _st.ttest_ind(v.to_numpy(), b.to_numpy(), equal_var=False)
        return delta, *_t_result(res, level), "welch"


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and is not counted
    in m. Written here because scipy has no Holm correction."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m - j + 1) * p_(j), j from 1
    out[order] = np.maximum.accumulate(scaled)  # step-down: never below an earlier one
    return out


def verdict(delta: float, p_holm: float, level: float = LEVEL) -> str:
    """better / worse when the Holm-adjusted p is below 1 - level, else inconclusive."""
    if not (np.isfinite(p_holm) and p_holm < 1 - level):
        return "inconclusive"
    if delta > 0:
        return "better"
    return "worse" if delta < 0 else "inconclusive"


def _vs_baseline(
    vals: pd.Series, base_vals: pd.Series, variant: str, baseline: str, level: float
) -> dict:
    """delta, ci_low, ci_high, ci_method, p_value of one variant row."""
    nan = float("nan")
    if variant == baseline:
        return dict(delta=0.0, ci_low=nan, ci_high=nan, ci_method="baseline", p_value=nan)
    if base_vals.empty or vals.empty:
        return dict(delta=nan, ci_low=nan, ci_high=nan, ci_method="no baseline", p_value=nan)
    d, lo, hi, p, method = delta_ci(vals, base_vals, level)
    return dict(delta=d, ci_low=lo, ci_high=hi, ci_method=method, p_value=p)


def summarize(
    df: pd.DataFrame,
    value: str = "miou",
    group: Sequence[str] = GROUP,
    baseline: str = BASELINE,
    level: float = LEVEL,
) -> pd.DataFrame:
    """One row per group x variant: mean, std (sample, ddof=1; NaN for one run), n (runs),
    seeds (sorted, comma-separated), delta (vs the baseline variant of the same group),
    ci_low, ci_high, ci_halfwidth, ci_method (paired-t | welch | n/a | baseline | no baseline),
    p_value, p_holm (Holm over the group's variants), verdict (better | worse | inconclusive |
    baseline) and ci_includes_zero (boolean, NA without an interval). Values keep df's scale."""
    keys = group_keys(df, group)
    rows = []
    for gvals, sub in df.groupby(keys, sort=True, dropna=False) if keys else [((), df)]:
        gvals = gvals if isinstance(gvals, tuple) else (gvals,)
        base = sub[sub["variant"] == baseline]
        base_vals = base.set_index("seed")[value].astype(float).dropna()
        group_rows = []
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
            row.update(_vs_baseline(vals, base_vals, variant, baseline, level))
            group_rows.append(row)
        for row, p in zip(group_rows, holm([r["p_value"] for r in group_rows])):
            row["p_holm"] = p
            row["verdict"] = (
                "baseline" if row["ci_method"] == "baseline" else verdict(row["delta"], p, level)
            )
        rows += group_rows
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out.insert(out.columns.get_loc("ci_high") + 1, "ci_halfwidth", (out.ci_high - out.ci_low) / 2)
    has_ci = out["ci_low"].notna() & out["ci_high"].notna()
    flag = (out["ci_low"] <= 0) & (out["ci_high"] >= 0)
    out["ci_includes_zero"] = pd.array(
        [bool(f) if h else pd.NA for f, h in zip(flag, has_ci)], dtype="boolean"
    )
    return out
