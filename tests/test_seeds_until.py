"""`danet sweep GRID --seeds-until W [--max-seeds M]`: which seeds the loop adds (width only,
the baseline paired), and a tiny grid through the command as a user types it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis import stats
from analysis.collect import collect
from danet.cli import main
from slurm.grid import expand, load_grid, with_seed
from slurm.seeds_until import added_runs, cell_key, next_seed, seeds_needed

CONFIG = {
    "train": {"iterations": 2, "batch_size": 2, "threads": 1, "checkpoint_every": 100},
    "data": {"train_size": 8, "val_size": 4, "image_size": 64, "crop_size": 64},
}


def _grid(folder: Path, variants=("none", "se"), seeds=(0, 1), cluster="debug") -> Path:
    # se rescales the features from the first step (cam and pam start as the identity, so two
    # iterations leave them almost exactly equal to none and their interval almost zero wide)
    path = folder / "mini.yaml"
    grid = {"model.variant": list(variants), "seed": list(seeds)}
    launcher = {"cluster": cluster, "max_parallel": 2, "timeout_min": 10}
    path.write_text(yaml.safe_dump({"config": CONFIG, "grid": grid, "launcher": launcher}))
    return path


def _summary(arms: dict[str, dict[int, float]]) -> pd.DataFrame:
    rows = [(v, s, x) for v, runs in arms.items() for s, x in runs.items()]
    df = pd.DataFrame(rows, columns=["variant", "seed", "miou"]).assign(dataset="synthetic")
    return stats.summarize(df)


def test_the_stopping_rule_looks_at_the_width_only():
    none = {0: 60.0, 1: 61.0, 2: 62.0}
    s = _summary(
        {
            "none": none,
            "pam": {0: 70.0, 1: 81.0, 2: 77.0},  # excludes 0, half-width about 13.7: more seeds
            "cam": {0: 60.1, 1: 60.9, 2: 62.05},  # includes 0, half-width about 0.2: enough
            "ema": {0: 63.0},  # no interval yet: more seeds
            "sagan": {i: 60.0 + 9 * (i % 2) for i in range(4)},  # wide but at --max-seeds 4
        }
    ).set_index("variant")
    assert s.loc["pam", "ci_low"] > 0 and s.loc["pam", "ci_halfwidth"] > 2
    assert bool(s.loc["cam", "ci_includes_zero"]) and s.loc["cam", "ci_halfwidth"] < 2
    need = seeds_needed(s.reset_index(), 2.0, 4, "none")
    assert sorted(need["variant"]) == ["ema", "pam"]
    # the same with no interval narrow enough: every variant below M seeds gets one
    assert sorted(seeds_needed(s.reset_index(), 0.1, 4, "none")["variant"]) == [
        "cam", "ema", "pam"
    ]
    assert seeds_needed(s.reset_index(), 100.0, 4, "none")["variant"].tolist() == ["ema"]


def test_a_group_without_baseline_never_asks_for_seeds():
    s = _summary({"pam": {0: 70.0, 1: 81.0}})
    assert s["ci_method"].tolist() == ["no baseline"]
    assert seeds_needed(s, 2.0, 10, "none").empty


def test_next_seed_is_the_smallest_unused():
    assert next_seed(set()) == 0
    assert next_seed({0, 1, 3}) == 2
    assert next_seed({1, 2}) == 0


def test_added_runs_pair_with_the_baseline_per_group(tmp_path):
    """Two groups (settings): pam lacks seed 2 in both, the baseline has it in one only."""
    grid = tmp_path / "g.yaml"
    axes = {"model.variant": ["none", "pam"], "data.setting": ["context", "local"], "seed": [0]}
    grid.write_text(yaml.safe_dump({"config": CONFIG, "grid": axes}))
    specs = expand(load_grid(grid), tmp_path / "runs")
    cells = {cell_key(s): s for s in specs}
    have = {("none", "context"): [0, 1, 2], ("none", "local"): [0, 1], ("pam", "context"): [0, 1],
            ("pam", "local"): [0, 1]}
    rows = [
        (with_seed(spec, seed).run_id, cell_key(spec), seed, variant, setting)
        for spec in specs
        for variant, setting in [(spec.cfg.model.variant, spec.cfg.data.setting)]
        for seed in have[(variant, setting)]
    ]
    df = pd.DataFrame(rows, columns=["run_id", "cell", "seed", "variant", "setting"])
    need = pd.DataFrame({"variant": ["pam", "pam"], "setting": ["context", "local"]})
    new = added_runs(need, df, cells, ["setting"], "none")
    got = sorted((s.cfg.model.variant, s.cfg.data.setting, s.cfg.seed) for s in new)
    assert got == [("none", "local", 2), ("pam", "context", 2), ("pam", "local", 2)]
    for spec in new:  # named as the grid names the run of that cell and seed
        grid_spec = next(s for s in specs if cell_key(s) == cell_key(spec))
        assert spec.run_dir == grid_spec.run_dir.parent / spec.run_id
        assert spec.run_id.startswith(f"{spec.cfg.model.variant}-tiny-synthetic-s2-")
        assert {k: v for k, v in vars(spec.cfg).items() if k != "seed"} == {
            k: v for k, v in vars(grid_spec.cfg).items() if k != "seed"
        }


@pytest.mark.parametrize(
    "args, says",
    [
        (["--seeds-until", "0"], "--seeds-until must be a half-width above 0"),
        (["--seeds-until", "-1"], "--seeds-until must be a half-width above 0"),
        (["--seeds-until", "nan"], "--seeds-until must be a half-width above 0"),
        (["--seeds-until", "2", "--max-seeds", "1"], "--max-seeds must be 2 or more"),
        (["--max-seeds", "5"], "--max-seeds only applies with --seeds-until"),
        (["--seeds-until", "2", "--no-wait"], "drop --no-wait"),
    ],
)
def test_bad_values_are_one_line_exit_2(tmp_path, capsys, args, says):
    code = main(["sweep", str(_grid(tmp_path)), "--runs-root", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("danet sweep: error: ") and says in err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_a_grid_without_the_baseline_is_refused(tmp_path, capsys):
    grid = _grid(tmp_path, variants=("pam", "cam"))
    assert main(["sweep", str(grid), "--seeds-until", "2", "--dry-run"]) == 2
    assert "has no run of 'none'" in capsys.readouterr().err


def _sweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "danet.cli", "sweep", "mini.yaml", "--no-report", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def _seeds(cwd: Path) -> dict[str, list[int]]:
    df, problems = collect(cwd / "runs" / "mini")
    assert not problems
    return {v: sorted(g["seed"]) for v, g in df.groupby("variant")}


def test_seeds_are_added_to_variant_and_baseline_until_max_seeds(tmp_path):
    """A width nothing reaches: the loop stops at --max-seeds, and a later call goes on from
    the runs there. The grid's debug launcher runs the jobs in this process (seconds); `launch`
    is the same for local and slurm."""
    _grid(tmp_path)
    out = _sweep(tmp_path, "--seeds-until", "1e-9", "--max-seeds", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 runs: 0 done, 4 to run" in out.stdout
    assert "seeds-until 1e-09: round 1 adds 2 runs (se: half-width " in out.stdout
    assert "round 2" not in out.stdout
    assert "done after 1 round (se: half-width" in out.stdout
    assert "n=3, --max-seeds reached)" in out.stdout
    assert _seeds(tmp_path) == {"none": [0, 1, 2], "se": [0, 1, 2]}
    specs = expand(load_grid(tmp_path / "mini.yaml"), tmp_path / "runs")
    names = {p.name for p in (tmp_path / "runs" / "mini").iterdir() if not p.name.startswith(".")}
    assert names == {with_seed(s, seed).run_id for s in specs[::2] for seed in (0, 1, 2)}

    again = _sweep(tmp_path, "--seeds-until", "1e-9", "--max-seeds", "4")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 runs: 4 done, 0 to run" in again.stdout
    assert "round 1 adds 2 runs (se: half-width " in again.stdout and ", n=3)" in again.stdout
    assert _seeds(tmp_path) == {"none": [0, 1, 2, 3], "se": [0, 1, 2, 3]}
