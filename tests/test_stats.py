"""analysis.stats: which interval applies, computed by hand with scipy, and the properties that
keep it from overclaiming (seed labels carry no information except which runs pair up)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import stats

# The worked example's mIoU (%) of the README: two seeds each.
NONE = {0: 62.09, 1: 61.73}
DANET = {0: 89.25, 1: 84.12}


def _frame(arms: dict[str, dict[int, float]], **group: str) -> pd.DataFrame:
    rows = [(v, s, x) for v, runs in arms.items() for s, x in runs.items()]
    return pd.DataFrame(rows, columns=["variant", "seed", "miou"]).assign(
        dataset="synthetic", **group
    )


def _row(arms: dict[str, dict[int, float]], variant: str = "danet") -> pd.Series:
    return stats.summarize(_frame(arms)).set_index("variant").loc[variant]


def _relabel(runs: dict[int, float], labels: list[int]) -> dict[int, float]:
    return dict(zip(labels, runs.values()))


def test_worked_example_same_seeds_is_paired_t():
    row = _row({"none": NONE, "danet": DANET})
    d = [DANET[s] - NONE[s] for s in (0, 1)]
    half = st.t.ppf(0.975, 1) * np.std(d, ddof=1) / np.sqrt(2)
    assert row["ci_method"] == "paired-t"
    assert row["delta"] == pytest.approx(np.mean(d), abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-5.53, 55.08), abs=0.01)
    assert row["ci_halfwidth"] == pytest.approx(half)
    assert row["p_value"] == pytest.approx(st.ttest_rel([89.25, 84.12], [62.09, 61.73]).pvalue)
    assert row["p_value"] > 0.05 and row["verdict"] == "inconclusive"
    assert bool(row["ci_includes_zero"]) is True


def test_worked_example_other_seeds_is_welch_and_includes_zero():
    """The old percentile bootstrap gave about [+22.0, +27.5] here: the same four numbers,
    only danet's seed labels changed."""
    row = _row({"none": NONE, "danet": _relabel(DANET, [2, 3])})
    want = st.ttest_ind([89.25, 84.12], [62.09, 61.73], equal_var=False)
    ci = want.confidence_interval(confidence_level=0.95)
    assert row["ci_method"] == "welch"
    assert row["delta"] == pytest.approx(np.mean([89.25, 84.12]) - np.mean([62.09, 61.73]))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert row["ci_low"] < 0 < row["ci_high"] and bool(row["ci_includes_zero"]) is True
    assert row["p_value"] == pytest.approx(want.pvalue, rel=1e-12)
    assert row["verdict"] == "inconclusive"


ARMS = {
    "none": {0: 60.1, 1: 61.9, 2: 63.0, 3: 59.4},
    "pam": {0: 70.2, 1: 73.9, 2: 71.0},
    "cam": {0: 61.0, 1: 64.8, 2: 60.7, 3: 66.1},
    "sagan": {7: 68.0, 8: 72.5, 9: 65.1},  # no seed shared with none: welch
    "ema": {5: 64.0},  # one run: n/a
}


def test_a_consistent_relabelling_changes_nothing_but_the_seeds_column():
    before = stats.summarize(_frame(ARMS))
    rng = np.random.default_rng(0)
    labels = sorted({s for runs in ARMS.values() for s in runs})
    for _ in range(5):
        new = dict(zip(labels, rng.permutation(np.arange(100, 100 + len(labels))).tolist()))
        arms = {v: {new[s]: x for s, x in runs.items()} for v, runs in ARMS.items()}
        after = stats.summarize(_frame(arms))
        assert (after["seeds"] != before["seeds"]).any()
        pd.testing.assert_frame_equal(
            after.drop(columns="seeds"), before.drop(columns="seeds"), rtol=1e-12
        )
    assert set(before["ci_method"]) == {"baseline", "paired-t", "welch", "n/a"}


def test_permuting_the_labels_of_an_unpaired_arm_leaves_its_interval_alone():
    before = _row(ARMS, "sagan")
    rng = np.random.default_rng(1)
    for _ in range(8):
        # any labels (some of none's among them) that do not make sagan's seeds a subset of none's
        labels = rng.choice(np.arange(0, 20), size=3, replace=False).tolist()
        if set(labels) <= set(ARMS["none"]):
            continue
        after = _row({**ARMS, "sagan": _relabel(ARMS["sagan"], labels)}, "sagan")
        assert after["ci_method"] == "welch"
        cols = ["delta", "ci_low", "ci_high", "p_value"]
        assert after[cols].tolist() == pytest.approx(before[cols].tolist(), rel=1e-12)


def test_an_extra_seed_on_one_arm_only_is_welch_from_the_values():
    danet = {**DANET, 2: 87.0}  # seed 2 has no baseline run
    row = _row({"none": NONE, "danet": danet})
    want = st.ttest_ind(list(danet.values()), list(NONE.values()), equal_var=False)
    ci = want.confidence_interval(confidence_level=0.95)
    assert row["ci_method"] == "welch"
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert row["p_value"] == pytest.approx(want.pvalue, rel=1e-12)


def test_extra_baseline_seeds_are_left_out_of_the_paired_delta():
    none = {**NONE, 2: 70.0}  # the variant has no seed 2: it does not enter Δ
    row = _row({"none": none, "danet": DANET})
    d = [DANET[s] - NONE[s] for s in (0, 1)]
    assert row["ci_method"] == "paired-t"
    assert row["delta"] == pytest.approx(np.mean(d), abs=1e-12)
    unpaired = np.mean(list(DANET.values())) - np.mean(list(none.values()))
    assert row["delta"] != pytest.approx(unpaired)


def test_a_seed_run_twice_is_averaged_first():
    df = _frame({"none": NONE, "danet": DANET})
    twice = pd.concat([df, df.assign(miou=df["miou"] + 1.0).iloc[[0]]], ignore_index=True)
    row = stats.summarize(twice).set_index("variant").loc["danet"]
    d = [DANET[0] - (NONE[0] + 0.5), DANET[1] - NONE[1]]
    assert row["ci_method"] == "paired-t" and row["delta"] == pytest.approx(np.mean(d))


def test_welch_with_unequal_variances_by_hand():
    a, b = [10.0, 12.0, 14.0, 16.0], [9.0, 9.5]  # variances 6.6667 and 0.125
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    assert df == pytest.approx(3.2157, abs=1e-4)  # not 4, the pooled df
    delta = np.mean(a) - np.mean(b)
    half = st.t.ppf(0.975, df) * se
    p = 2 * st.t.sf(delta / se, df)
    row = _row({"none": dict(enumerate(b)), "pam": dict(zip(range(10, 14), a))}, "pam")
    assert row["ci_method"] == "welch"
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((delta - half, delta + half))
    assert row["p_value"] == pytest.approx(p)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3 * 0.01, 2 * 0.02, 1 * 0.04 = 0.03, 0.04, 0.04 (monotone)
    assert stats.holm([0.04, 0.01, 0.02]).tolist() == pytest.approx([0.04, 0.03, 0.04])
    # step-down keeps the running maximum: 3 * 0.02 = 0.06 > 2 * 0.025 = 0.05 -> 0.06
    assert stats.holm([0.02, 0.025, 0.9]).tolist() == pytest.approx([0.06, 0.06, 0.9])
    assert stats.holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])
    out = stats.holm([0.01, float("nan"), 0.03])  # NaN does not count in m
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.03)


def test_the_verdict_uses_the_bonferroni_adjusted_p():
    # pam and cam each differ from none by a clear, consistent paired gap; sagan does not
    none = {0: 60.0, 1: 62.0, 2: 61.0}
    arms = {
        "none": none,
        "pam": {0: 62.0, 1: 65.0, 2: 62.5},  # differences 2.0, 3.0, 1.5: p 0.039
        "cam": {0: 64.0, 1: 63.0, 2: 62.0},  # differences 4.0, 1.0, 1.0
        "sagan": {0: 59.0, 1: 63.5, 2: 60.0},  # differences -1.0, 1.5, -1.0
    }
    s = stats.summarize(_frame(arms)).set_index("variant")
    pam = s.loc["pam"]
    assert pam["p_value"] < 0.05 <= pam["p_bonferroni"]  # significant alone, not among three
    assert pam["p_bonferroni"] == pytest.approx(3 * pam["p_value"])
    assert pam["ci_low"] > 0 and not pam["ci_includes_zero"]  # the unadjusted CI excludes 0
    assert pam["sim_low"] < 0 < pam["sim_high"]  # the simultaneous one, shown, does not
    assert pam["verdict"] == "inconclusive"
    p = s.loc[["pam", "cam", "sagan"], "p_value"].to_numpy()
    assert s.loc[["pam", "cam", "sagan"], "p_holm"].tolist() == pytest.approx(stats.holm(p))
    assert s.loc["none", "verdict"] == "baseline" and np.isnan(s.loc["none", "p_bonferroni"])
    # alone with the baseline, the same numbers are "better", the interval the unadjusted one
    alone = stats.summarize(_frame({"none": none, "pam": arms["pam"]})).set_index("variant")
    assert alone.loc["pam", "p_bonferroni"] == pytest.approx(pam["p_value"])
    assert alone.loc["pam", ["sim_low", "sim_high"]].tolist() == pytest.approx(
        alone.loc["pam", ["ci_low", "ci_high"]].tolist()
    )
    assert alone.loc["pam", "verdict"] == "better"


@pytest.mark.parametrize("seed", range(20))
def test_the_shown_interval_agrees_with_the_verdict(seed):
    """An interval that excludes 0 never sits next to `inconclusive`, nor one that includes 0
    next to better or worse: both come from the same Bonferroni level."""
    rng = np.random.default_rng(seed)
    base = rng.normal(60, 1, 4)
    arms = {"none": dict(enumerate(base))}
    for v in ("pam", "cam", "sagan", "ccnet"):
        arms[v] = dict(enumerate(base + rng.normal(rng.uniform(-3, 3), 1.5, 4)))
    for _, row in stats.summarize(_frame(arms)).iterrows():
        if row["variant"] == "none":
            continue
        excludes = row["sim_low"] > 0 or row["sim_high"] < 0
        assert excludes == (row["verdict"] in ("better", "worse")), row.to_dict()


def _headed(arms: dict[str, tuple[str, dict[int, float]]]) -> pd.DataFrame:
    rows = [(v, head, s, x) for v, (head, runs) in arms.items() for s, x in runs.items()]
    return pd.DataFrame(rows, columns=["variant", "head", "seed", "miou"]).assign(
        dataset="synthetic"
    )


DUAL_ARMS = {
    "none": ("single", {0: 60.0, 1: 61.0, 2: 60.5}),
    "pam": ("single", {0: 70.0, 1: 71.5, 2: 70.2}),
    "none (dual)": ("dual", {0: 63.0, 1: 63.5, 2: 64.0}),
    "danet": ("dual", {0: 63.5, 1: 63.4, 2: 64.2}),
}


def test_a_dual_head_variant_is_compared_with_the_dual_head_baseline():
    s = stats.summarize(_headed(DUAL_ARMS)).set_index("variant")
    assert s.loc["danet", "vs"] == "none (dual)" and s.loc["pam", "vs"] == "none"
    assert s.loc["danet", "delta"] == pytest.approx((0.5 - 0.1 + 0.2) / 3)
    assert s.loc["danet", "verdict"] == "inconclusive"  # the head's gain is not the attention's
    assert s.loc["none (dual)", "verdict"] == "control"
    assert s.loc["none", "verdict"] == "baseline"
    assert s.loc["pam", "p_bonferroni"] == pytest.approx(2 * s.loc["pam", "p_value"])


def test_without_the_matched_control_there_is_no_verdict():
    arms = {k: v for k, v in DUAL_ARMS.items() if k != "none (dual)"}
    s = stats.summarize(_headed(arms)).set_index("variant")
    danet = s.loc["danet"]
    assert danet["verdict"] == "no control" and danet["ci_method"] == "no matched control"
    assert np.isnan(danet["delta"]) and np.isnan(danet["p_value"])
    assert s.loc["pam", "p_bonferroni"] == pytest.approx(s.loc["pam", "p_value"])  # m = 1


def test_attention_inside_the_backbone_is_compared_with_the_same_model_without_it():
    """"pam + gc@block[3,4]" differs from "pam" by the backbone's attention alone: that is its
    control, not "none" (which would credit it with PAM's gain too)."""
    gc = "gc@block[3,4]"
    arms = {**DUAL_ARMS, f"pam + {gc}": ("single", {0: 70.5, 1: 71.7, 2: 71.0}),
            f"none + {gc}": ("single", {0: 60.2, 1: 61.5, 2: 60.6})}
    frame = _headed(arms).assign(
        backbone_attention=lambda d: [gc if " + " in v else "" for v in d["variant"]])
    s = stats.summarize(frame).set_index("variant")
    assert s.loc[f"pam + {gc}", "vs"] == "pam" and s.loc[f"none + {gc}", "vs"] == "none"
    assert s.loc[f"pam + {gc}", "delta"] == pytest.approx((0.5 + 0.2 + 0.8) / 3)
    assert s.loc["pam", "vs"] == "none" and s.loc["danet", "vs"] == "none (dual)"
    without_pam = stats.summarize(frame[frame["variant"] != "pam"]).set_index("variant")
    assert without_pam.loc[f"pam + {gc}", "verdict"] == "no control"


def test_decomposition_splits_the_paper_protocol_gain():
    d = stats.decompose(_headed(DUAL_ARMS)).set_index("part")
    assert list(d.index) == list(stats.PARTS)
    assert d.loc["paper protocol", "delta"] == pytest.approx(
        d.loc["head", "delta"] + d.loc["attention", "delta"]  # the same seeds in every arm
    )
    assert d.loc["head", "contrast"] == "none (dual) - none"
    assert d.loc["attention", "ci_method"] == "paired-t"
    assert d.loc["head", "ci_low"] > 0  # the second branch and its losses gain here


def test_worse_and_holm_within_each_group_only():
    arms = {"none": {0: 70.0, 1: 72.0, 2: 71.0}, "cam": {0: 60.0, 1: 61.5, 2: 60.4}}
    pam = {0: 71.0, 1: 72.5, 2: 71.4}  # above none by 1.0, 0.5, 0.4: less clear than cam
    both = pd.concat([_frame(arms, setting="a"), _frame({**arms, "pam": pam}, setting="b")])
    s = stats.summarize(both).set_index(["setting", "variant"])
    assert s.loc[("a", "cam"), "p_holm"] == pytest.approx(s.loc[("a", "cam"), "p_value"])
    assert s.loc[("a", "cam"), "verdict"] == "worse"
    assert s.loc[("b", "cam"), "p_holm"] == pytest.approx(2 * s.loc[("b", "cam"), "p_value"])
    assert s.loc[("b", "cam"), "p_bonferroni"] == pytest.approx(
        2 * s.loc[("b", "cam"), "p_value"]
    )


def test_single_run_side_is_n_a_without_interval_or_p():
    for arms in ({"none": NONE, "danet": {0: 89.25}}, {"none": {0: 62.09}, "danet": DANET}):
        row = _row(arms)
        assert row["ci_method"] == "n/a" and row["verdict"] == "inconclusive"
        assert np.isnan(row["ci_low"]) and np.isnan(row["p_value"]) and np.isnan(row["p_holm"])
        assert np.isnan(row["ci_halfwidth"]) and row["ci_includes_zero"] is pd.NA


def test_columns_and_no_bootstrap_left():
    s = stats.summarize(_frame(ARMS))
    assert list(s.columns) == [
        "dataset", "variant", "mean", "std", "n", "seeds", "vs", "delta", "ci_low", "ci_high",
        "ci_halfwidth", "ci_method", "p_value", "p_holm", "p_bonferroni", "sim_low", "sim_high",
        "verdict", "ci_includes_zero",
    ]
    assert set(s["ci_method"]) <= set(stats.METHODS)
    assert set(s["verdict"]) <= set(stats.VERDICTS)
    assert not any("boot" in name.lower() for name in dir(stats))
