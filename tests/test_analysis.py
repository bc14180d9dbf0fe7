"""Statistics, tables, figures and the HTML report of `analysis/` on result.json files with
known values (written by `write_runs`), and the report rendered in headless Chromium.

The numbers (mIoU as fractions; tables show percent):

    none   seeds 0,1,2: 0.60 0.62 0.64   mean 0.62 std 0.02
    pam    seeds 0,1,2: 0.70 0.73 0.76   mean 0.73 std 0.03
           paired differences 0.10 0.11 0.12: mean 0.11, sd 0.01, se 0.01/sqrt(3) = 0.0057735,
           t(0.975, df=2) = 4.3026527, half width 0.0248414 -> 95 % CI [0.0851586, 0.1348414]
    cam    seeds 0,1,2: 0.61 0.65 0.62   differences 0.01 0.03 -0.02: mean 0.0066667,
           sd 0.0251661, se 0.0145297, half width 0.0625161 -> CI [-0.0558494, 0.0691828]
           (includes zero: flagged)
    ccnet  seeds 3,4,5: 0.66 0.68 0.70   no common seeds with none -> bootstrap,
           Δ = 0.06; every resampled difference lies in [0.02, 0.10]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from math import sqrt
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as st

from analysis import plots, report, stats, tables
from analysis.tables import load

MIOU = {
    "none": {0: 0.60, 1: 0.62, 2: 0.64},
    "pam": {0: 0.70, 1: 0.73, 2: 0.76},
    "cam": {0: 0.61, 1: 0.65, 2: 0.62},
    "ccnet": {3: 0.66, 4: 0.68, 5: 0.70},
}
CLASSES = ["road", "car"]
FIGURES = ["miou_vs_gflops", "scaling", "per_class_iou", "learning_curves", "miou_bars"]
# the profile: head-scope rows at feature size 8 (crop 64 / 8) and 16, module rows 33..129
HEAD = {  # variant: (gflops, latency_ms)
    "none": (0.1, 2.0),
    "pam": (0.5, 5.0),
    "cam": (0.2, 4.0),
    "ccnet": (0.3, 2.5),
}
EXPONENT = {"none": 2, "pam": 4, "cam": 2, "ccnet": 3}  # memory ~ side ** exponent


def _result(variant: str, seed: int, miou: float) -> dict:
    per_class = {"road": round(miou + 0.05, 6), "car": round(miou - 0.05, 6)}
    config = {
        "seed": seed,
        "data": {"name": "synthetic", "setting": "context", "crop_size": 64},
        "model": {"variant": variant, "backbone": "resnet50", "variant_opts": {}},
        "train": {"iterations": 100, "lr": 0.01, "loss_weights": [1.0, 1.0, 1.0]},
        "eval": {"modes": ["whole", "msflip"]},
    }
    metrics = {"miou": miou, "pixel_accuracy": 0.9, "per_class_iou": per_class}
    ms = {"miou": round(miou + 0.01, 6), "pixel_accuracy": 0.91, "per_class_iou": per_class}
    return {
        "schema": 1,
        "run_id": f"{variant}-s{seed}",
        "config": config,
        "variant": variant,
        "backbone": "resnet50",
        "dataset": "synthetic",
        "setting": "context",
        "seed": seed,
        "iterations": 100,
        **metrics,
        "eval_mode": "whole",
        "eval": {"whole": metrics, "msflip": ms},
        "classes": CLASSES,
        "params": 1_000_000 + 1000 * len(variant),
        "head_params": 1000 * len(variant),
        "train_time_s": 10.0,
        "peak_memory_mb": 512.0,
        "versions": {"python": "3.11.0", "torch": "2.4.0"},
        "device": "cpu (x86_64, 2 cores)",
        "threads": 2,
    }


def write_runs(root: Path) -> Path:
    """runs/<sweep>/<run>/result.json + log.jsonl for MIOU, plus an unreadable and an
    old-schema result.json."""
    runs = root / "runs"
    for variant, seeds in MIOU.items():
        for seed, miou in seeds.items():
            d = runs / "fixture" / f"{variant}-s{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps(_result(variant, seed, miou)))
            lines = [{"event": "resume", "iteration": 0}]
            for it in range(10, 101, 10):
                lines.append({"iteration": it, "loss": 2 - 0.015 * it + 0.05 * seed, "lr": 0.01})
            lines.append({"iteration": 100, "loss": 0.5, "lr": 0.0})  # resumed: logged twice
            lines.append({"event": "eval", "iteration": 100, "mode": "whole", "miou": miou})
            (d / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    bad = runs / "broken" / "torn"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text('{"schema": 1, "miou": ')
    old = runs / "broken" / "old"
    old.mkdir(parents=True)
    (old / "result.json").write_text(json.dumps({**_result("pam", 9, 0.99), "schema": 0}))
    return runs


def write_profile(path: Path) -> Path:
    """profile.csv as analysis.profile writes it (size 'HxW', params_m, backbone for the
    model): head rows at feature sizes 8 (crop 64 / 8) and 16 except for ccnet, which only
    has whole-model rows (of two backbones; 'resnet50' at 64x64 is the one to join);
    module rows at sides 17..129 with memory and latency ~ side ** EXPONENT."""
    rows = []

    def row(v, scope, size, backbone="", k=1.0, gflops=0.0, lat=0.0, mem=0.0):
        return dict(variant=v, scope=scope, backbone=backbone, size=size,
                    input=f"1x64x{size}", params_m=0.002, gmacs_fvcore=gflops * k / 2,
                    gflops_flopcounter=gflops * k, mem_fwd_mb=mem / 2, mem_fwdbwd_mb=mem,
                    latency_ms=lat * k, device="cpu")  # fmt: skip

    for v, (gflops, lat) in HEAD.items():
        if v == "ccnet":
            rows.append(row(v, "model", "64x64", "resnet50", 1.0, gflops, lat, 10.0))
            rows.append(row(v, "model", "128x128", "resnet50", 4.0, gflops, lat, 40.0))
            rows.append(row(v, "model", "64x64", "resnet101", 9.0, gflops, lat, 90.0))
        else:
            for size in (8, 16):
                k = (size / 8) ** 2
                rows.append(row(v, "head", f"{size}x{size}", "", k, gflops, lat, 10 * k))
        for size in (17, 33, 65, 129):
            mem = 2e-4 * size ** EXPONENT[v]
            rows.append(row(v, "module", f"{size}x{size}", "", 1.0, 2.0, 5 * mem, mem))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    write_runs(root)
    write_profile(root / "profile.csv")
    return root


@pytest.fixture(scope="module")
def summary(fixture_dir):
    df, _, _ = load(fixture_dir / "runs")
    return stats.summarize(df).set_index("variant")


# --- statistics ---------------------------------------------------------------------------


def test_t_quantile_used_by_hand():
    assert st.t.ppf(0.975, 2) == pytest.approx(4.3026527, abs=1e-7)


def test_mean_std_n(summary):
    assert summary.loc["none", ["mean", "std", "n"]].tolist() == pytest.approx([0.62, 0.02, 3])
    assert summary.loc["pam", ["mean", "std", "n"]].tolist() == pytest.approx([0.73, 0.03, 3])
    assert summary.loc["ccnet", "seeds"] == "3,4,5"
    assert summary.loc["none", "ci_method"] == "baseline"
    assert summary.loc["none", "delta"] == 0


def test_paired_t_interval_by_hand(summary):
    pam = summary.loc["pam"]
    assert pam["ci_method"] == "paired-t"
    half = 4.3026527 * 0.01 / sqrt(3)  # t(0.975, 2) * sd(d) / sqrt(n) = 0.0248414
    assert half == pytest.approx(0.0248414, abs=1e-7)
    assert pam["delta"] == pytest.approx(0.11, abs=1e-12)
    assert pam["ci_low"] == pytest.approx(0.0851586, abs=1e-7)
    assert pam["ci_high"] == pytest.approx(0.1348414, abs=1e-7)
    assert not pam["ci_includes_zero"]


def test_flag_when_interval_includes_zero(summary):
    cam = summary.loc["cam"]
    assert cam["ci_method"] == "paired-t"
    assert cam["delta"] == pytest.approx(0.0066667, abs=1e-7)
    assert cam["ci_low"] == pytest.approx(-0.0558494, abs=1e-7)
    assert cam["ci_high"] == pytest.approx(0.0691828, abs=1e-7)
    assert bool(cam["ci_includes_zero"]) is True


def test_unpaired_goes_to_a_reproducible_bootstrap(fixture_dir, summary):
    cc = summary.loc["ccnet"]
    assert cc["ci_method"] == "bootstrap"
    assert cc["delta"] == pytest.approx(0.06, abs=1e-12)
    assert 0.02 - 1e-12 <= cc["ci_low"] < 0.06 < cc["ci_high"] <= 0.10 + 1e-12
    assert not cc["ci_includes_zero"]
    df, _, _ = load(fixture_dir / "runs")
    again = stats.summarize(df).set_index("variant").loc["ccnet"]
    assert (again["ci_low"], again["ci_high"]) == (cc["ci_low"], cc["ci_high"])
    a, b = [0.66, 0.68, 0.70], [0.60, 0.62, 0.64]
    assert stats.bootstrap_ci(a, b, seed=0) == stats.bootstrap_ci(a, b, seed=0)
    assert stats.bootstrap_ci(a, b, n_boot=200, seed=1) != stats.bootstrap_ci(a, b, seed=0)


def test_groups_are_kept_apart(fixture_dir):
    df, _, _ = load(fixture_dir / "runs")
    both = pd.concat([df, df.assign(setting="local", miou=df["miou"] - 0.1)], ignore_index=True)
    s = stats.summarize(both)
    assert len(s) == 8 and sorted(set(s["setting"])) == ["context", "local"]
    pam = s[s["variant"] == "pam"].set_index("setting")
    assert pam["mean"].tolist() == pytest.approx([0.73, 0.63])
    assert pam["delta"].tolist() == pytest.approx([0.11, 0.11])
    assert pam["ci_low"].tolist() == pytest.approx([0.0851586] * 2, abs=1e-7)


def test_single_run_has_no_interval():
    df = pd.DataFrame(
        {"variant": ["none", "pam"], "seed": [0, 0], "miou": [0.5, 0.6], "dataset": ["d"] * 2}
    )
    s = stats.summarize(df).set_index("variant")
    assert s.loc["pam", "delta"] == pytest.approx(0.1)
    assert s.loc["pam", "ci_method"] == "n/a"
    assert s.loc["pam", "ci_includes_zero"] is pd.NA
    assert s["std"].isna().all()


def test_bad_files_reported_by_path_and_nothing_else_lost(fixture_dir):
    df, problems, raw = load(fixture_dir / "runs")
    assert len(df) == 12 and len(raw) == 12
    text = "\n".join(problems)
    assert len(problems) == 2
    assert str(fixture_dir / "runs/broken/torn/result.json") in text and "unreadable" in text
    assert str(fixture_dir / "runs/broken/old/result.json") in text and "schema 0" in text


def test_results_inside_hidden_folders_are_not_runs(fixture_dir, tmp_path):
    """A sweep's code snapshot (.code/) may hold a stranded copy of a run: never counted."""
    from analysis.collect import collect

    one = Path(collect(fixture_dir / "runs")[0]["path"].iloc[0]) / "result.json"
    for folder in ("sw/r1", "sw/.code/20261203-0123abcd/runs/sw/r1"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "result.json").write_bytes(one.read_bytes())
    df, problems = collect(tmp_path)
    assert len(df) == 1 and not problems and df["path"].item() == str(tmp_path / "sw/r1")


# --- tables -------------------------------------------------------------------------------


def _run_cli(module, fixture_dir: Path, out: Path) -> int:
    """`danet tables|plots|report` on the fixture runs with the fixture profile."""
    runs, profile = fixture_dir / "runs", fixture_dir / "profile.csv"
    return module.main([str(runs), "--out", str(out), "--profile", str(profile)])


def test_tables(fixture_dir, capsys):
    out = fixture_dir / "tables"
    rc = _run_cli(tables, fixture_dir, out)
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken/torn/result.json" in err and "broken/old/result.json" in err
    for name in ("main", "per_class"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{name}.{ext}").stat().st_size > 100

    main = pd.read_csv(out / "main.csv")
    zoo = ["Method", "Backbone", "Crop Size", "Lr schd", "Dataset", "Setting", "Numerics"]
    assert list(main.columns[:8]) == [*zoo, "mIoU"]
    assert set(main["Numerics"]) == {"fp32"}  # runs without a speed record: the defaults
    for col in ["mIoU", "mIoU std", "n", "Δ mIoU", "Δ CI low", "Δ CI high", "CI method",
                "CI includes 0", "mIoU(ms+flip)", "Params (M)", "Mem (GB)", "GFLOPs",
                "Mem fwd+bwd (MB)", "Inf time (fps)"]:  # fmt: skip
        assert col in main.columns, col
    assert main["Method"].tolist() == ["none", "pam", "cam", "ccnet"]  # Table 1's order
    assert main["n"].sum() == 12
    m = main.set_index("Method")
    assert m.loc["pam", "mIoU"] == pytest.approx(73.0)
    assert m.loc["pam", "mIoU std"] == pytest.approx(3.0)
    assert m.loc["pam", "Δ mIoU"] == pytest.approx(11.0)
    assert m.loc["pam", "Δ CI low"] == pytest.approx(8.51586, abs=1e-5)
    assert m.loc["pam", "Δ CI high"] == pytest.approx(13.48414, abs=1e-5)
    assert m.loc["pam", "mIoU(ms+flip)"] == pytest.approx(74.0)
    assert m.loc["cam", "CI includes 0"] == True  # noqa: E712 (read back from csv)
    assert m.loc["ccnet", "CI method"] == "bootstrap"
    assert m.loc["none", "Crop Size"] == "64x64" and m.loc["none", "Lr schd"] == 100
    assert m.loc["none", "Mem (GB)"] == pytest.approx(0.5)
    # head row at feature size 8 (crop 64 / 8), not 16
    assert m.loc["pam", "GFLOPs"] == pytest.approx(0.5)
    assert m.loc["pam", "Inf time (fps)"] == pytest.approx(200.0)
    assert m.loc["none", "Profile scope"] == "head" and m.loc["none", "Profile size"] == "8x8"
    assert m.loc["ccnet", "Profile scope"] == "model" and m.loc["ccnet", "GFLOPs"] == 0.3
    assert m.loc["ccnet", "Profile size"] == "64x64" and m.loc["ccnet", "Mem fwd+bwd (MB)"] == 10
    assert m.loc["ccnet", "Profile params (M)"] == pytest.approx(0.002)

    md = (out / "main.md").read_text()
    assert "| Method " in md and "| Crop Size " in md and "| Inf time (fps) " in md
    assert "73.00 ± 3.00" in md and "+11.00 [+8.52, +13.48]" in md
    assert "+0.67 [-5.58, +6.92]" in md
    tex = (out / "main.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"73.00 $\pm$ 3.00" in tex and r"$\Delta$ mIoU [95\% CI]" in tex
    per = pd.read_csv(out / "per_class.csv").set_index("Method")
    assert per.loc["none", "road"] == pytest.approx(67.0)
    assert per.loc["pam", "car"] == pytest.approx(68.0)
    assert "road" in (out / "per_class.md").read_text()
    assert r"\toprule" in (out / "per_class.tex").read_text()


def test_tables_without_profile_leave_columns_empty(fixture_dir, capsys):
    out = fixture_dir / "tables-noprof"
    rc = tables.main([str(fixture_dir / "runs"), "--out", str(out), "--profile", "/nonexistent"])
    assert rc == 0
    assert "no profile" in capsys.readouterr().err
    main = pd.read_csv(out / "main.csv")
    assert main["GFLOPs"].isna().all() and main["Inf time (fps)"].isna().all()
    assert main["mIoU"].notna().all()


# --- figures ------------------------------------------------------------------------------


def test_plots(fixture_dir):
    out = fixture_dir / "plots"
    rc = _run_cli(plots, fixture_dir, out)
    assert rc == 0
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 5000, name
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = (out / f"{name}.svg").read_text()
        assert len(svg) > 5000 and "<svg" in svg, name


def test_plots_without_profile_skip_with_a_note(fixture_dir, capsys):
    out = fixture_dir / "plots-noprof"
    assert plots.main([str(fixture_dir / "runs"), "--out", str(out), "--profile", "/none"]) == 0
    err = capsys.readouterr().err
    assert "miou_vs_gflops: skipped" in err and "scaling: skipped" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.{e}" for n in FIGURES[2:] for e in ("png", "svg")
    )


def test_profile_sizes():
    assert tables.side("33x33") == 33 and tables.side("512x1024") == 1024
    assert tables.side(65) == 65 and tables.side("?") != tables.side("?")  # NaN
    assert tables.feature_size("64x64") == 8


def test_pareto_front_and_curves(fixture_dir):
    import numpy as np

    idx = plots.pareto_front(np.array([1.0, 2.0, 3.0, 2.5]), np.array([50.0, 60.0, 55.0, 61.0]))
    assert idx.tolist() == [0, 1, 3]
    df, _, _ = load(fixture_dir / "runs")
    curves = plots.learning_curves(df)
    assert len(curves) == 12 * 10  # event lines skipped, the twice-logged step kept once
    last = curves[curves["iteration"] == 100]
    assert (last["loss"] == 0.5).all()


# --- report -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_html(fixture_dir):
    out = fixture_dir / "report" / "report.html"
    rc = _run_cli(report, fixture_dir, out)
    assert rc == 0
    return out


def test_report_is_self_contained(report_html):
    text = report_html.read_text()
    assert text.count("<img ") == len(FIGURES)
    assert text.count("src='data:image/png;base64,") == len(FIGURES)
    for name in FIGURES:
        assert f"id='fig-{name}'" in text
    assert "src='http" not in text and "href=" not in text and "<link" not in text
    assert "73.00 ± 3.00" in text and "+11.00 [+8.52, +13.48]" in text  # main table
    assert "road" in text and "67.0" in text  # per-class table
    assert "broken/torn/result.json" in text  # skipped files listed
    assert "model.variant" in text and "train.lr" in text  # varying and common config keys
    assert "cpu (x86_64, 2 cores)" in text and "2.4.0" in text  # machine and versions


def _have_chromium() -> str | None:
    found = shutil.which("chromium")
    if found or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=True, timeout=600, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium():
    path = _have_chromium()
    if path is None:
        if os.environ.get("DANET_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is required (DANET_REQUIRE_CHROMIUM=1) but not installable")
        pytest.skip("chromium not available and could not be installed")
    return path


def test_report_renders_in_headless_chromium(chromium, report_html, tmp_path):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", report_html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert f'data-images-loaded="{len(FIGURES)}/{len(FIGURES)}"' in dom, (elapsed, dom[:500])
    assert 'data-images="ok"' in dom
    assert "73.00 ± 3.00" in dom


def test_profile_rows_stand_only_for_runs_they_describe(fixture_dir):
    """The profiled head is DANet's 2048 -> 512: not the head of a tiny or ResNet-18 run; a
    whole-model row only stands for runs of its own backbone."""
    from analysis.tables import profile_row, read_profile

    profile = read_profile(fixture_dir / "profile.csv")
    assert profile_row(profile, "pam", "64x64", "resnet50")["scope"] == "head"
    assert profile_row(profile, "pam", "64x64", "tiny") == {}
    r50, r101 = (profile_row(profile, "ccnet", "64x64", b) for b in ("resnet50", "resnet101"))
    assert r101["gflops_flopcounter"] == pytest.approx(9 * r50["gflops_flopcounter"])
    assert profile_row(profile, "ccnet", "64x64", "resnet18") == {}


def test_runs_with_number_changing_speed_options_are_never_pooled():
    from analysis.collect import numerics
    from analysis.stats import summarize

    assert numerics(None) == "fp32" and numerics({"amp": "off", "num_workers": 2}) == "fp32"
    assert numerics({"amp": "bf16", "channels_last": True}) == "bf16 + channels_last"
    df = pd.DataFrame(
        {
            "variant": ["none", "none", "pam", "pam"] * 2,
            "seed": [0, 1, 0, 1] * 2,
            "miou": [60.0, 62.0, 70.0, 72.0, 50.0, 52.0, 80.0, 82.0],
            "dataset": "synthetic",
            "numerics": ["fp32"] * 4 + ["bf16"] * 4,
        }
    )
    s = summarize(df, "miou").set_index(["numerics", "variant"])
    assert s.loc[("fp32", "pam"), "mean"] == 71.0 and s.loc[("bf16", "pam"), "mean"] == 81.0
    assert s.loc[("bf16", "pam"), "delta"] == 30.0  # against bf16's own baseline
    # the sweep's own report shows the column only where the runs differ in it
    from analysis import ablation

    runs = df.assign(
        miou=df["miou"] / 100, setting="context", backbone="tiny", iterations=100,
        pixel_accuracy=0.9, params=1e5, train_time_s=1.0, crop_size="64x64",
    )  # fmt: skip
    table = ablation.ablation_table(runs)
    assert "| numerics" in ablation.to_markdown(table)
    assert "numerics" not in ablation.to_markdown(table[table.numerics == "fp32"])
