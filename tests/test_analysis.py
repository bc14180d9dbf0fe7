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
    ccnet  seeds 3,4,5: 0.66 0.68 0.70   no common seeds with none -> Welch: Δ = 0.06,
           se = sqrt(0.02²/3 + 0.02²/3) = 0.0163299, df = 4 (equal spreads and sizes),
           t(0.975, 4) = 2.7764451, half width 0.0453392 -> CI [0.0146608, 0.1053392]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from math import sqrt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import report, stats, tables
from analysis.collect import COST as COST_COLUMNS
from analysis.tables import load

MIOU = {
    "none": {0: 0.60, 1: 0.62, 2: 0.64},
    "pam": {0: 0.70, 1: 0.73, 2: 0.76},
    "cam": {0: 0.61, 1: 0.65, 2: 0.62},
    "ccnet": {3: 0.66, 4: 0.68, 5: 0.70},
}
CLASSES = ["road", "car"]
FIGURES = ["miou_vs_gflops", "scaling", "per_class_iou", "learning_curves", "miou_ci"]
# the profile: head-scope rows at feature size 8 (crop 64 / 8) and 16, module rows 33..129
HEAD = {  # variant: (gflops, latency_ms)
    "none": (0.1, 2.0),
    "pam": (0.5, 5.0),
    "cam": (0.2, 4.0),
    "ccnet": (0.3, 2.5),
}
EXPONENT = {"none": 2, "pam": 4, "cam": 2, "ccnet": 3}  # memory ~ side ** exponent
# each run's measured cost (result.json `cost`): variant: (GMACs, attention GMACs,
# attention params, training peak MB, attention's share MB, latency ms)
COST = {
    "none": (0.25, 0.0, 0, 100.0, 0.0, 2.0),
    "pam": (0.5, 0.2, 2080, 130.0, 25.0, 5.0),
    "cam": (0.3, 0.04, 1, 110.0, 8.0, 4.0),
    "ccnet": (0.4, 0.1, 1560, 115.0, 12.0, 2.5),
    "danet": (0.6, 0.25, 2100, 140.0, 30.0, 6.0),
}


def _cost(variant: str) -> dict:
    gmacs, attention, params, peak, share, latency = COST[variant]
    return {
        "gmacs": gmacs, "gmacs_head": gmacs / 2, "gmacs_attention": attention,
        "params_attention": params, "train_peak_mb": peak, "attention_peak_mb": share,
        "latency_ms": latency, "images_per_s": 1000 / latency,
    }


def result_record(variant: str, seed: int, miou: float) -> dict:
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
        "cost": _cost(variant),
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
            (d / "result.json").write_text(json.dumps(result_record(variant, seed, miou)))
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
    (old / "result.json").write_text(json.dumps({**result_record("pam", 9, 0.99), "schema": 0}))
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
                    latency_ms=lat * k, device="cpu")

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


def test_unpaired_goes_to_welch(summary):
    cc = summary.loc["ccnet"]
    assert cc["ci_method"] == "welch"
    assert cc["delta"] == pytest.approx(0.06, abs=1e-12)
    half = 2.7764451 * sqrt(0.02**2 / 3 + 0.02**2 / 3)  # t(0.975, 4) * se = 0.0453392
    assert half == pytest.approx(0.0453392, abs=1e-7)
    assert cc["ci_low"] == pytest.approx(0.06 - half, abs=1e-7)
    assert cc["ci_high"] == pytest.approx(0.06 + half, abs=1e-7)
    assert not cc["ci_includes_zero"]
    welch = st.ttest_ind([0.66, 0.68, 0.70], [0.60, 0.62, 0.64], equal_var=False)
    assert cc["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)


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
    assert pd.isna(s.loc["pam", "p_value"]) and s.loc["pam", "verdict"] == "inconclusive"
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
    for col in ["mIoU", "mIoU std", "mIoU CI low", "mIoU CI high", "n", "Δ mIoU", "Δ CI low",
                "Δ CI high", "Δ sim. low", "Δ sim. high", "vs", "CI method", "p", "p (Holm)",
                "p (Bonferroni)", "Verdict", "mIoU(ms+flip)", "GFLOPs", "Attn GFLOPs",
                "Params (M)", "Attn params (K)", "Mem (MB)", "Attn mem (MB)",
                "In-run latency (ms)", "Latency (ms)", "Images/s"]:
        assert col in main.columns, col
    assert main["Method"].tolist() == ["none", "pam", "cam", "ccnet"]  # Table 1's order
    assert main["n"].sum() == 12
    m = main.set_index("Method")
    assert m.loc["pam", "mIoU"] == pytest.approx(73.0)
    assert m.loc["pam", "mIoU std"] == pytest.approx(3.0)
    half = st.t.ppf(0.975, 2) * 3.0 / sqrt(3)  # the t-interval of pam's mean
    assert m.loc["pam", "mIoU CI high"] == pytest.approx(73.0 + half)
    assert m.loc["pam", "Δ mIoU"] == pytest.approx(11.0)
    assert m.loc["pam", "Δ CI low"] == pytest.approx(8.51586, abs=1e-5)
    assert m.loc["pam", "Δ CI high"] == pytest.approx(13.48414, abs=1e-5)
    assert m.loc["pam", "mIoU(ms+flip)"] == pytest.approx(74.0)
    assert m.loc["pam", "Verdict"] == "better" and m.loc["cam", "Verdict"] == "inconclusive"
    assert m.loc["none", "Verdict"] == "baseline"
    assert m.loc["ccnet", "CI method"] == "welch"
    assert m.loc["none", "Crop Size"] == "64x64" and m.loc["none", "Lr schd"] == 100
    # the runs' own cost: GFLOPs = 2 x GMACs, params from the run, memory and latency
    assert m.loc["pam", "GFLOPs"] == pytest.approx(1.0)
    assert m.loc["pam", "Attn GFLOPs"] == pytest.approx(0.4)
    assert m.loc["pam", "Attn params (K)"] == pytest.approx(2.08)
    assert m.loc["pam", "Params (M)"] == pytest.approx(1.003)
    assert m.loc["pam", "Mem (MB)"] == 130.0 and m.loc["pam", "Attn mem (MB)"] == 25.0
    # the run's own latency is kept apart: it was taken while other runs trained
    assert m.loc["pam", "In-run latency (ms)"] == 5.0 and np.isnan(m.loc["pam", "Latency (ms)"])
    # the shown interval is simultaneous over the three comparisons (Bonferroni)
    wider = st.t.ppf(1 - 0.05 / 6, 2) / st.t.ppf(0.975, 2)
    assert m.loc["pam", "Δ sim. high"] - 11.0 == pytest.approx(wider * (13.48414 - 11.0))
    assert m.loc["pam", "vs"] == "none" and m.loc["pam", "p (Bonferroni)"] == pytest.approx(
        3 * m.loc["pam", "p"]
    )

    md = (out / "main.md").read_text()
    # one value throughout: said once above the table, not in a column
    assert md.startswith("Backbone resnet50; Crop Size 64x64; Lr schd 100; Dataset synthetic")
    assert "| Method " in md and "| Crop Size " not in md and "| Latency (ms) " not in md
    assert f"73.00 ± {half:.2f}" in md and "+11.00 [+6.58, +15.42]" in md
    cam = m.loc["cam"]
    assert f"+0.67 [{cam['Δ sim. low']:+.2f}, {cam['Δ sim. high']:+.2f}]" in md
    assert cam["Δ sim. low"] < -5.58 and "| inconclusive " in md
    assert "| paired-t " in md and "| welch " in md  # the test of each row
    per = pd.read_csv(out / "per_class.csv").set_index("Method")
    assert per.loc["none", "road"] == pytest.approx(67.0)
    assert per.loc["pam", "car"] == pytest.approx(68.0)
    per_md = (out / "per_class.md").read_text()
    assert per_md.startswith("Backbone resnet50;") and "| Method   | road " in per_md
    assert r"\toprule" in (out / "per_class.tex").read_text()


def test_latex_table_is_compact_and_complete(fixture_dir):
    """The paper's table: variant, mIoU ± CI, Δ with verdict, GFLOPs, params, memory, in a
    booktabs table environment that \\input's into a document loading booktabs."""
    out = fixture_dir / "tables-tex"
    tables.main([str(fixture_dir / "runs"), "--out", str(out)])
    tex = (out / "main.tex").read_text()
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    head = lines[lines.index(r"\toprule") + 1]
    columns = [c.strip() for c in head.removesuffix(r"\\").split("&")]
    # n is in the caption when every row has the same
    assert columns == ["Method", "mIoU (\\%)", r"$\Delta$ [95\% CI]", "GFLOPs",
                       "Params (M)", "Mem (MB)"]
    rows = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    assert len(rows) == 4 and all(r.count("&") == len(columns) - 1 for r in rows)
    assert rows[1].startswith(r"pam & 73.0 $\pm$ 7.5 & +11.0 [+6.6, +15.4] better & ")
    assert r"(n = 3)" in tex
    assert r"\caption{" in tex and r"\label{tab:main}" in tex
    assert "nan" not in tex and "_" not in tex.replace(r"\_", "")


def test_latex_tables_compile(fixture_dir, pdflatex, tmp_path):
    """main.tex and per_class.tex \\input into an article with booktabs, compiled by pdflatex."""
    out = fixture_dir / "tables-pdf"
    tables.main([str(fixture_dir / "runs"), "--out", str(out)])
    doc = tmp_path / "paper.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        f"\\input{{{out / 'main.tex'}}}\n\\input{{{out / 'per_class.tex'}}}\n\\end{{document}}\n"
    )
    proc = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Overfull" not in proc.stdout  # the compact table fits the text width
    assert (tmp_path / "paper.pdf").stat().st_size > 1000


def test_runs_without_a_cost_leave_its_columns_empty(fixture_dir, tmp_path):
    """Runs recorded before the cost existed still make a table (cost cells empty)."""
    runs = tmp_path / "runs"
    shutil.copytree(fixture_dir / "runs" / "fixture", runs / "fixture")
    for path in runs.rglob("result.json"):
        data = json.loads(path.read_text())
        del data["cost"]
        path.write_text(json.dumps(data))
    assert tables.main([str(runs), "--out", str(tmp_path / "t")]) == 0
    main = pd.read_csv(tmp_path / "t" / "main.csv")
    assert main["GFLOPs"].isna().all() and main["Latency (ms)"].isna().all()
    assert main["mIoU"].notna().all()


def test_profile_sizes():
    assert tables.side("33x33") == 33 and tables.side("512x1024") == 1024
    assert tables.side(65) == 65 and tables.side("?") != tables.side("?")  # NaN


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
    assert "73.00 ± 7.45" in text and "+11.00 [+6.58, +15.42]" in text  # main table
    assert "road" in text and "67.0" in text  # per-class table
    assert "broken/torn/result.json" in text  # skipped files listed
    assert "model.variant" in text and "train.lr" in text  # varying and common config keys
    assert "cpu (x86_64, 2 cores)" in text and "2.4.0" in text  # machine and versions


def _required_tool(binary: str, flag: str) -> str:
    """The system tool's path. Tests never install: `make system-packages` (root, Debian) does,
    as .ci/run calls it; without the tool the test skips, or fails where `flag`=1 (CI)."""
    path = shutil.which(binary)
    if path is None:
        missing = f"{binary} is not installed (as root on Debian: make system-packages)"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{missing}; {flag}=1 requires it")
        pytest.skip(missing)
    return path


@pytest.fixture(scope="session")
def chromium():
    return _required_tool("chromium", "DANET_REQUIRE_CHROMIUM")


@pytest.fixture(scope="session")
def pdflatex():
    return _required_tool("pdflatex", "DANET_REQUIRE_LATEX")  # with booktabs


def test_report_renders_in_headless_chromium(chromium, report_html, tmp_path):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", report_html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert f'data-images-loaded="{len(FIGURES)}/{len(FIGURES)}"' in dom, (elapsed, dom[:500])
    assert 'data-images="ok"' in dom
    assert "73.00 ± 7.45" in dom


CITYSCAPES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
# window.onload writes the layout's widths into <body> for --dump-dom to show: the page's
# scrollWidth beyond its clientWidth is horizontal overflow; a table's width beyond its
# parent's says that the fixture's tables really are too wide for the page
MEASURE = """<script>
window.addEventListener('load', function () {
  var root = document.documentElement, b = document.body;
  var tables = Array.prototype.slice.call(document.querySelectorAll('table'));
  b.setAttribute('data-inner-width', window.innerWidth);
  b.setAttribute('data-client-width', root.clientWidth);
  b.setAttribute('data-scroll-width', Math.max(root.scrollWidth, b.scrollWidth));
  b.setAttribute('data-table-excess', Math.max.apply(null, tables.map(function (t) {
    return t.scrollWidth - t.parentElement.clientWidth; })));
  var th = document.querySelector('thead th');
  b.setAttribute('data-header', th ? getComputedStyle(th).position : 'none');
});
</script>"""


def write_wide_runs(root: Path) -> Path:
    """Runs of every COST variant, two backbones and 19 Cityscapes-like classes: main and
    per-class tables wider than the report's text column in a 1400 px window."""
    runs = root / "runs"
    for i, variant in enumerate(COST):
        for backbone, seed in [(b, s) for b in ("resnet50", "resnet101") for s in (0, 1)]:
            r = result_record(variant, seed, 0.6 + 0.01 * i + 0.005 * seed)
            ious = {c: round(0.3 + 0.03 * k + 0.01 * i, 6) for k, c in enumerate(CITYSCAPES)}
            for metrics in (r, *r["eval"].values()):
                metrics["per_class_iou"] = ious
            r.update(classes=CITYSCAPES, backbone=backbone, run_id=f"{variant}-{backbone}-s{seed}")
            d = runs / "wide" / r["run_id"]
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps(r))
    return runs


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wide")
    out = root / "report.html"
    runs = write_wide_runs(root)
    assert report.main([str(runs), "--out", str(out), "--profile", str(root / "none.csv")]) == 0
    return out


def test_report_tables_scroll_in_their_own_box(wide_report):
    text = wide_report.read_text()
    assert text.count("<table") == text.count("<div class='table-wrap'><table") == 5
    assert text.count("<table class='sticky-first'>") == 2  # main and per-class
    assert "<th class='num'>traffic light</th>" in text  # numeric columns right-aligned
    assert "<td class='num'>30.0</td>" in text and "<td>resnet101</td>" in text


def _layout(chromium: str, page: Path, tmp_path: Path) -> dict[str, str]:
    """The data-* widths MEASURE writes, of `page` loaded in a 1400 px wide headless window."""
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>", 1))
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
         "--hide-scrollbars", "--virtual-time-budget=10000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stdout[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


def test_report_wide_tables_do_not_overflow_a_1400px_page(chromium, wide_report, tmp_path):
    layout = _layout(chromium, wide_report, tmp_path)
    assert layout["inner-width"] == "1400", layout  # the window size took effect
    assert int(layout["table-excess"]) > 0, layout  # the fixture's tables are too wide...
    # ...and scroll inside their own box: the page itself never scrolls sideways
    assert int(layout["scroll-width"]) <= int(layout["client-width"]), layout
    assert layout["header"] == "sticky", layout


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
    # the tables show the column only where the runs differ in it
    runs = df.assign(
        miou=df["miou"] / 100, setting="context", backbone="tiny", iterations=100,
        pixel_accuracy=0.9, params=1e5, train_time_s=1.0, crop_size="64x64",
        **{c: float("nan") for c in COST_COLUMNS},
    )
    shown = tables.display_table(tables.main_table(runs)).to_markdown(index=False)
    assert "| Numerics" in shown
    fp32 = runs[runs.numerics == "fp32"]
    assert "Numerics" not in tables.display_table(tables.main_table(fp32)).to_markdown()
