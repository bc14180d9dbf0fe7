"""`danet plots` (analysis/plots.py): every figure as PNG (200 dpi) and SVG, and the data each
one draws: the fused output's loss, the intermediate evaluations, the mIoU intervals.

Runs come from tests/test_analysis.py's fixture (MIOU: none, pam, cam, ccnet x 3 seeds),
each given a measured `cost` here (GMACS below) so that mIoU vs GFLOPs is drawn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import plots
from analysis.stats import mean_ci
from analysis.tables import load
from tests.test_analysis import MIOU, result_record, write_profile, write_runs

FIGURES = ["miou_vs_gflops", "scaling", "per_class_iou", "learning_curves", "miou_ci"]
GMACS = {"none": 1.0, "pam": 3.0, "cam": 1.5, "ccnet": 2.0}


def _cost(gmacs: float) -> dict:
    return {"gmacs": gmacs, "gmacs_head": gmacs / 2, "gmacs_attention": gmacs / 4,
            "params_attention": 1000, "train_peak_mb": 100.0, "attention_peak_mb": 1.0,
            "latency_ms": 2.0, "images_per_s": 50.0}


def _set_cost(runs: Path, with_cost: bool) -> None:
    for path in (runs / "fixture").glob("*/result.json"):
        data = json.loads(path.read_text())
        data["cost"] = _cost(GMACS[data["variant"]]) if with_cost else None
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plots")
    _set_cost(write_runs(root), with_cost=True)
    write_profile(root / "profile.csv")
    return root


def _write_run(root: Path, variant: str, seed: int, miou: float, log: list[dict]) -> None:
    d = root / "runs" / "s" / f"{variant}-s{seed}"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(result_record(variant, seed, miou)))
    (d / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))


def _step(it: int, loss: float, fused: float | None = None) -> dict:
    rec = {"iteration": it, "loss": loss, "lr": 0.01, "time": 0.1}
    return rec if fused is None else {**rec, "losses": [fused, loss / 3, loss / 3]}


def _eval(it: int, miou: float, mode: str = "whole") -> dict:
    return {"event": "eval", "iteration": it, "mode": mode, "miou": miou}


# --- files -------------------------------------------------------------------------------------


def test_every_figure_as_png_at_200_dpi_and_svg(fixture_dir):
    out = fixture_dir / "plots"
    runs, profile = fixture_dir / "runs", fixture_dir / "profile.csv"
    assert plots.main([str(runs), "--out", str(out), "--profile", str(profile)]) == 0
    for name in FIGURES:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        with Image.open(png) as im:
            dpi = im.info.get("dpi")
        assert dpi is not None and round(dpi[0]) >= 200 and round(dpi[1]) >= 200, (name, dpi)
        svg = (out / f"{name}.svg").read_text()
        assert len(svg) > 5000 and "<svg" in svg, name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{e}" for n in FIGURES for e in ("png", "svg")
    )


def test_without_cost_or_profile_two_figures_skip_with_a_note(tmp_path, capsys):
    _set_cost(write_runs(tmp_path), with_cost=False)
    out = tmp_path / "plots"
    assert plots.main([str(tmp_path / "runs"), "--out", str(out), "--profile", "/none"]) == 0
    err = capsys.readouterr().err
    assert "miou_vs_gflops: skipped (no GFLOPs" in err and "scaling: skipped" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{e}" for n in FIGURES[2:] for e in ("png", "svg")
    )


def test_pareto_front_and_the_fixtures_curves(fixture_dir):
    idx = plots.pareto_front(np.array([1.0, 2.0, 3.0, 2.5]), np.array([50.0, 60.0, 55.0, 61.0]))
    assert idx.tolist() == [0, 1, 3]
    df, _, _ = load(fixture_dir / "runs")
    curves = plots.learning_curves(df)  # lines without `losses`: their `loss`
    assert len(curves) == 12 * 10  # event lines skipped, the twice-logged step kept once
    assert (curves[curves["iteration"] == 100]["loss"] == 0.5).all()
    evals = plots.val_curves(df)  # the final evaluation only
    assert len(evals) == 12 and set(evals["iteration"]) == {100}


# --- learning curves -------------------------------------------------------------------------


def test_training_curves_use_the_fused_outputs_loss(tmp_path):
    """DANet's `loss` is the weighted sum of three cross-entropies; the curve is `losses[0]`
    (the fused output's), and `loss` only where a line has no `losses`."""
    for seed, shift in ((0, 0.0), (1, 0.2)):
        _write_run(tmp_path, "danet", seed, 0.7, [
            {"event": "resume", "iteration": 0},
            _step(10, loss=3.0 + shift, fused=1.0 + shift),
            _step(20, loss=2.4 + shift, fused=0.8 + shift),
            _step(20, loss=2.1 + shift, fused=0.7 + shift),  # resumed: logged twice, last kept
            _eval(20, 0.7),
        ])
    _write_run(tmp_path, "none", 0, 0.6, [_step(10, loss=1.5), _step(20, loss=1.2)])
    df, _, _ = load(tmp_path / "runs")
    curves = plots.learning_curves(df)
    danet = curves[curves["variant"] == "danet"].set_index(["seed", "iteration"])["loss"]
    assert danet.to_dict() == pytest.approx({(0, 10): 1.0, (0, 20): 0.7, (1, 10): 1.2,
                                             (1, 20): 0.9})
    none = curves[curves["variant"] == "none"].set_index("iteration")["loss"]
    assert none.to_dict() == pytest.approx({10: 1.5, 20: 1.2})

    summary = plots.curve_summary(curves, "loss")
    d = summary[summary["variant"] == "danet"].set_index("iteration")
    assert d["mean"].tolist() == pytest.approx([1.1, 0.8])
    assert d["std"].tolist() == pytest.approx([math.sqrt(0.02)] * 2)  # sd of (x, x + 0.2)
    assert d["n"].tolist() == [2, 2]

    fig = plots.fig_learning_curves(df, curves, plots.val_curves(df))
    loss_ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in loss_ax.lines}
    assert list(lines["danet"].get_ydata()) == pytest.approx([1.1, 0.8])  # not 2.9, 2.2
    assert "fused output" in loss_ax.get_title()
    assert "band ±1 std over seeds" in fig.get_suptitle()
    plt.close(fig)


def test_val_curve_reads_the_intermediate_evaluations(tmp_path):
    """eval events at every `eval.every` and at the end; the run's first mode only; an
    evaluation logged twice (a resumed run) keeps its last value."""
    for seed, m in ((0, 0.50), (1, 0.60)):
        _write_run(tmp_path, "pam", seed, m + 0.2, [
            _step(50, 1.0, 1.0), _eval(50, m - 0.1), _eval(50, m),  # resumed: the last kept
            _step(100, 0.5, 0.5), _eval(100, m + 0.2), _eval(100, 0.99, "msflip"),
        ])
    _write_run(tmp_path, "none", 0, 0.4, [_step(100, 0.9), _eval(100, 0.4)])  # final only
    df, _, _ = load(tmp_path / "runs")
    evals = plots.val_curves(df)
    assert set(evals["mode"]) == {"whole"}
    pam = evals[evals["variant"] == "pam"].set_index(["seed", "iteration"])["miou"]
    assert pam.to_dict() == pytest.approx({(0, 50): 50.0, (0, 100): 70.0, (1, 50): 60.0,
                                           (1, 100): 80.0})

    fig = plots.fig_learning_curves(df, plots.learning_curves(df), evals)
    val_ax = fig.axes[1]
    lines = {ln.get_label(): ln for ln in val_ax.lines}
    assert list(lines["pam"].get_xdata()) == [50, 100]
    assert list(lines["pam"].get_ydata()) == pytest.approx([55.0, 75.0])
    assert lines["pam"].get_marker() == "o"  # a marker at each evaluation
    assert list(lines["none"].get_xdata()) == [100] and lines["none"].get_marker() == "o"
    assert "validation mIoU (whole)" in val_ax.get_title()
    plt.close(fig)


# --- mIoU with intervals -----------------------------------------------------------------------


def _band(ax) -> tuple[float, float]:
    (band,) = [p for p in ax.patches if p.get_gid() == plots.BASELINE_BAND]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    return float(ys.min()), float(ys.max())


def test_miou_figure_draws_every_interval_inside_its_limits(fixture_dir):
    df, _, _ = load(fixture_dir / "runs")
    fig = plots.fig_miou_ci(df)
    (ax,) = fig.axes
    cis = {v: mean_ci([100 * m for m in seeds.values()]) for v, seeds in MIOU.items()}
    lo, hi = ax.get_ylim()
    lows, highs = [c[1] for c in cis.values()], [c[2] for c in cis.values()]
    assert lo < min(lows) and hi > max(highs)
    assert min(lows) - lo == pytest.approx(hi - max(highs))  # padded the same at both ends
    assert _band(ax) == pytest.approx(cis["none"][1:])  # the baseline's interval, as a band
    (bars,) = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
    segments = bars.lines[2][0].get_segments()
    drawn = np.array([(s[0][1], s[1][1]) for s in segments])
    assert drawn == pytest.approx(np.array([cis[v][1:] for v in ["none", "pam", "cam", "ccnet"]]))
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["none\nn=3", "pam\nn=3", "cam\nn=3", "ccnet\nn=3"]
    assert ax.get_title() == "val mIoU: mean and 95 % t-interval over 3 seeds"
    plt.close(fig)


def test_single_runs_and_groups_do_not_crash(fixture_dir):
    """A second setting where pam and the baseline have one run each: a panel of its own,
    their points without bars (said in the legend), and no band for the baseline."""
    df, _, _ = load(fixture_dir / "runs")
    local = df.assign(setting="local", miou=df["miou"] - 0.1)
    local = local[~local["variant"].isin(["pam", "none"]) | (local["seed"] == 0)]
    both = pd.concat([df, local], ignore_index=True)
    points = plots.miou_points(both).set_index(["setting", "variant"])
    assert points.loc[("local", "pam"), "n"] == 1
    assert math.isnan(points.loc[("local", "pam"), "low"])

    fig = plots.fig_miou_ci(both)
    context, other = fig.axes[:2]
    assert (context.get_title(), other.get_title()) == ("context", "local")
    assert [p.get_gid() for p in other.patches].count(plots.BASELINE_BAND) == 0
    lo, hi = other.get_ylim()
    assert lo < 100 * local["miou"].min() and hi > 100 * local["miou"].max()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "one run: no interval" in legend and "none: one run" in legend
    assert "over n seeds (n per variant)" in fig.get_suptitle()
    plt.close(fig)

    figs, notes = plots.make_figures(both)
    assert {"miou_ci", "miou_vs_gflops", "learning_curves"} <= set(figs) and not [
        n for n in notes if n.startswith(("miou", "learning"))
    ]
    for f in figs.values():
        plt.close(f)


def test_each_row_is_drawn_over_its_own_controls_band():
    """With both heads, none's band lies under the single-head rows and none (dual)'s under
    the dual-head ones: a row is read against its matched control."""
    arms = {"none": ("single", 60), "pam": ("single", 70), "none (dual)": ("dual", 64),
            "danet": ("dual", 72)}
    rows = [{"variant": v, "head": h, "seed": s, "miou": (m + s) / 100, "dataset": "synthetic"}
            for v, (h, m) in arms.items() for s in range(3)]
    fig = plots.fig_miou_ci(pd.DataFrame(rows))
    (ax,) = fig.axes
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    for gid, rows_of in ((plots.BASELINE_BAND, {"none", "pam"}),
                         (plots.DUAL_BAND, {"none (dual)", "danet"})):
        xs = sorted(round(p.get_x() + p.get_width() / 2) for p in ax.patches
                    if p.get_gid() == gid)
        assert {ticks[x] for x in xs} == rows_of, gid
    plt.close(fig)


def test_a_backbone_attention_row_is_drawn_over_the_band_of_the_model_without_it():
    gc = "gc@block[3,4]"
    arms = {"none": 60, "pam": 70, f"pam + {gc}": 71}
    rows = [{"variant": v, "head": "single", "seed": s, "miou": (m + s) / 100,
             "dataset": "synthetic", "backbone_attention": gc if " + " in v else ""}
            for v, m in arms.items() for s in range(3)]
    fig = plots.fig_miou_ci(pd.DataFrame(rows))
    (ax,) = fig.axes
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    for gid, rows_of in ((plots.BASELINE_BAND, {"none", "pam"}),
                         (f"{plots.CONTROL_BAND}:pam", {f"pam + {gc}"})):
        xs = sorted(round(p.get_x() + p.get_width() / 2) for p in ax.patches
                    if p.get_gid() == gid)
        assert {ticks[x] for x in xs} == rows_of, gid
    plt.close(fig)
