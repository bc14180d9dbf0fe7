"""Statistics over seeds: mean, sample std and n per group, and Δ vs the matched control with a
95 % CI, a p-value, its correction for several comparisons and a verdict.

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

**The matched control.** Each row is compared with the baseline of its own head skeleton:
"none" (the single head: one branch, one output, one loss) for a single-module variant, and
"none (dual)" (the dual head with the identity in both slots: two branches, three outputs,
three losses) for a dual-head variant such as DANet. So a Δ measures the attention alone, not
a second head branch and two auxiliary losses with it (`decompose` splits DANet's gain over
the single-head FCN, the paper's own contrast, into those two parts). A row with attention
inside the backbone ("pam + gc@block[3,4]") is compared with the same model without it
("pam"), the one thing that differs. A row whose control is
missing from its group while the other skeleton's baseline is there gets no Δ and the verdict
`no control` (method `no matched control`): add the control's runs. The controls themselves
are `baseline` (single) and `control` (dual).

**Several comparisons at once.** p_value is each comparison's own; `p_bonferroni` = min(1,
m p) over the m comparisons of the group with a p (Bonferroni), and `p_holm` Holm's step-down
correction of the same p-values (kept in the CSV; never larger than Bonferroni's). The verdict
is "better" when p_bonferroni < 1 - level and Δ > 0, "worse" when p_bonferroni < 1 - level and
Δ < 0, else "inconclusive". sim_low and sim_high are the same t-interval at the level
1 - (1 - level) / m: intervals that hold together for all m comparisons with probability at
least `level`. Such an interval excludes 0 exactly when p_bonferroni < 1 - level, so the shown
interval and the verdict always agree; ci_low and ci_high keep the unadjusted interval.

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
DUAL = " (dual)"  # a single-module variant run in the dual head: "none (dual)", "pam (dual)"
GROUP = ("dataset", "setting", "backbone", "crop_size", "iterations", "numerics")
LEVEL = 0.95
METHODS = ("paired-t", "welch", "n/a", "baseline", "control", "no matched control", "no baseline")
VERDICTS = ("better", "worse", "inconclusive", "baseline", "control", "no control")


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


def verdict(delta: float, p_adjusted: float, level: float = LEVEL) -> str:
    """better / worse when the adjusted p is below 1 - level, else inconclusive."""
    if not (np.isfinite(p_adjusted) and p_adjusted < 1 - level):
        return "inconclusive"
    if delta > 0:
        return "better"
    return "worse" if delta < 0 else "inconclusive"


def control_name(head: str, baseline: str = BASELINE) -> str:
    """The matched control of a run with this head: the baseline with the same head skeleton
    ("none" for the single head, "none (dual)" for the dual one)."""
    return baseline + (DUAL if head == "dual" else "")


def matched_control(variant: str, head: str, inside: object = "", baseline: str = BASELINE
                    ) -> str:
    """The arm a row is compared with: the same model without the one thing the row adds. A
    row with attention inside the backbone ("pam + gc@block[3,4]", `inside` its placement; a
    table's missing value for none) is compared with the model without it ("pam"); any other
    with its head's baseline."""
    suffix = f" + {inside}" if isinstance(inside, str) and inside else ""
    if suffix and variant.endswith(suffix):
        return variant[: -len(suffix)]
    return control_name(head, baseline)


def _arm(sub: pd.DataFrame, name: str, value: str) -> pd.Series:
    runs = sub[sub["variant"] == name]
    return runs.set_index("seed")[value].astype(float).dropna()


def _compare(vals: pd.Series, control: pd.Series, level: float) -> dict:
    """delta, ci_low, ci_high, ci_method, p_value of a row against its control."""
    d, lo, hi, p, method = delta_ci(vals, control, level)
    return dict(delta=d, ci_low=lo, ci_high=hi, ci_method=method, p_value=p)


def _row_vs_control(sub: pd.DataFrame, variant: str, vals: pd.Series, value: str,
                    baseline: str, level: float) -> dict:
    """The row's control and its comparison with it (module docstring)."""
    nan = float("nan")
    runs = sub[sub["variant"] == variant]
    head = str(runs["head"].iloc[0]) if "head" in runs else "single"
    inside = runs["backbone_attention"].iloc[0] if "backbone_attention" in runs else ""
    control = matched_control(variant, head, inside, baseline)
    empty = dict(delta=nan, ci_low=nan, ci_high=nan, p_value=nan)
    if variant == control and head != "dual":
        return dict(vs="", **{**empty, "delta": 0.0}, ci_method="baseline")
    if variant == control:
        return dict(vs="", **empty, ci_method="control")
    if "losses" in runs:  # the same losses too: the control's outputs are weighted alike
        sub = sub[sub["losses"] == runs["losses"].iloc[0]]
    control_vals = _arm(sub, control, value)
    if control_vals.empty or vals.empty:
        other = (sub["variant"] == baseline).any() or sub["variant"].str.startswith(
            baseline + " (").any()
        method = "no matched control" if other else "no baseline"
        return dict(vs=control, **empty, ci_method=method)
    return dict(vs=control, **_compare(vals, control_vals, level))


def _adjust(group_rows: list[dict], vals_of: dict, controls: dict, level: float) -> None:
    """Bonferroni- and Holm-adjusted p-values over the group's comparisons, the verdict from
    the Bonferroni one and the simultaneous intervals at its level (module docstring)."""
    tested = [r for r in group_rows if np.isfinite(r["p_value"])]
    m = len(tested)
    for row, p in zip(group_rows, holm([r["p_value"] for r in group_rows])):
        row["p_holm"] = p
        finite = np.isfinite(row["p_value"])
        row["p_bonferroni"] = min(1.0, m * row["p_value"]) if finite else float("nan")
        row["sim_low"] = row["sim_high"] = float("nan")
        if np.isfinite(row["p_value"]):
            simultaneous = 1 - (1 - level) / m
            _, lo, hi, _, _ = delta_ci(vals_of[row["variant"]], controls[row["variant"]],
                                       simultaneous)
            row["sim_low"], row["sim_high"] = lo, hi
        method = row["ci_method"]
        if method in ("baseline", "control"):
            row["verdict"] = method
        elif method == "no matched control":
            row["verdict"] = "no control"
        else:
            row["verdict"] = verdict(row["delta"], row["p_bonferroni"], level)


def summarize(
    df: pd.DataFrame,
    value: str = "miou",
    group: Sequence[str] = GROUP,
    baseline: str = BASELINE,
    level: float = LEVEL,
) -> pd.DataFrame:
    """One row per group x variant: mean, std (sample, ddof=1; NaN for one run), n (runs),
    seeds (sorted, comma-separated), vs (the matched control), delta (vs that control),
    ci_low, ci_high, ci_halfwidth (unadjusted), ci_method (paired-t | welch | n/a | baseline |
    control | no matched control | no baseline), p_value, p_holm, p_bonferroni, sim_low and
    sim_high (the simultaneous interval at the Bonferroni level), verdict (better | worse |
    inconclusive | baseline | control | no control) and ci_includes_zero (of the unadjusted
    interval; NA without one). Values keep df's scale."""
    keys = group_keys(df, group)
    rows = []
    for gvals, sub in df.groupby(keys, sort=True, dropna=False) if keys else [((), df)]:
        gvals = gvals if isinstance(gvals, tuple) else (gvals,)
        group_rows, vals_of, controls = [], {}, {}
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
            row.update(_row_vs_control(sub, variant, vals, value, baseline, level))
            same = sub[sub["losses"] == runs["losses"].iloc[0]] if "losses" in sub else sub
            vals_of[variant], controls[variant] = vals, _arm(same, row["vs"], value)
            group_rows.append(row)
        _adjust(group_rows, vals_of, controls, level)
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


PARTS = ("paper protocol", "head", "attention")


def decompose(df: pd.DataFrame, value: str = "miou", group: Sequence[str] = GROUP,
              level: float = LEVEL) -> pd.DataFrame:
    """What each part of a dual-head variant's gain over the single-head baseline comes from,
    per group: `paper protocol` (the variant against the single-head baseline, as the DANet
    paper's Table 1 compares), `head` (the dual head's second branch and its two losses: the
    dual-head baseline against the single-head one) and `attention` (the variant against the
    dual-head baseline, its matched control). Each a Δ with its unadjusted `level` interval
    and p (paired where the seeds pair); the first is the sum of the other two when every arm
    has the same seeds. One row per group x dual-head variant x part."""
    keys = group_keys(df, group)
    rows = []
    single, dual = BASELINE, BASELINE + DUAL
    for gvals, sub in df.groupby(keys, sort=True, dropna=False) if keys else [((), df)]:
        gvals = gvals if isinstance(gvals, tuple) else (gvals,)
        heads = sub.groupby("variant")["head"].first() if "head" in sub else pd.Series()
        for variant in [v for v, h in heads.items() if h == "dual" and v != dual]:
            arms = {"paper protocol": (variant, single), "head": (dual, single),
                    "attention": (variant, dual)}
            for part, (a, b) in arms.items():
                x, y = _arm(sub, a, value), _arm(sub, b, value)
                row = dict(zip(keys, gvals), variant=variant, part=part, contrast=f"{a} - {b}")
                if x.empty or y.empty:
                    nan = float("nan")
                    row.update(delta=nan, ci_low=nan, ci_high=nan, p_value=nan, ci_method="absent")
                else:
                    row.update(_compare(x, y, level))
                rows.append(row)
    return pd.DataFrame(rows)
