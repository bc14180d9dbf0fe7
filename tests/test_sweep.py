"""A small grid through submitit's local executor: runs, skips what is done, resumes the rest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.collect import collect
from slurm.grid import expand, load_grid

from .conftest import TINY


def _grid(tmp_path, seeds=(0, 1)):
    overrides = dict(item.split("=", 1) for item in TINY)
    config: dict = {}
    for key, value in overrides.items():
        section, leaf = key.split(".")
        config.setdefault(section, {})[leaf] = yaml.safe_load(value)
    path = tmp_path / "mini.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "mini",
                "config": config,
                "grid": {"model.variant": ["none", "pam"], "seed": list(seeds)},
                "launcher": {"cluster": "local", "max_parallel": 2, "timeout_min": 10},
            }
        )
    )
    return path


def run_sweep(tmp_path, grid, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "danet.cli",
            "sweep",
            str(grid),
            "--runs-root",
            str(tmp_path / "runs"),
            "--reports",
            str(tmp_path / "reports"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


def test_run_ids_are_deterministic_and_distinct(tmp_path):
    grid = load_grid(_grid(tmp_path))
    a, b = expand(grid, tmp_path), expand(grid, tmp_path)
    assert [s.run_id for s in a] == [s.run_id for s in b]
    assert len({s.run_id for s in a}) == 4
    assert a[0].run_id.startswith("none-tiny-synthetic-s0-")


def test_sweep_runs_skips_and_resumes(tmp_path):
    grid = _grid(tmp_path)
    first = run_sweep(tmp_path, grid)
    assert first.returncode == 0, first.stderr
    assert "4 runs: 0 done, 4 to run (2 at once, local executor)" in first.stdout
    df, problems = collect(tmp_path / "runs")
    assert len(df) == 4 and not problems
    report = tmp_path / "reports" / "mini"
    table = pd.read_csv(report / "main.csv")
    assert list(table["Method"]) == ["none", "pam"] and list(table["n"]) == [2, 2]
    assert table["GFLOPs"].notna().all() and table["Mem (MB)"].notna().all()
    assert (report / "miou_vs_gflops.png").stat().st_size > 1000
    assert "| none " in (report / "main.md").read_text() and "| pam " in first.stdout

    # An interrupted run: no result.json, a checkpoint at iteration 2.
    victim = sorted((tmp_path / "runs" / "mini").glob("pam-*-s1-*"))[0]
    (victim / "result.json").unlink()
    for ckpt in sorted((victim / "ckpt").glob("*.pt"))[1:]:
        ckpt.unlink()
    again = run_sweep(tmp_path, grid)
    assert again.returncode == 0, again.stderr
    assert "4 runs: 3 done, 1 to run" in again.stdout and "(resuming)" in again.stdout
    log = [json.loads(line) for line in (victim / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "iteration": 2} in log

    done = run_sweep(tmp_path, grid)
    assert "4 runs: 4 done, 0 to run" in done.stdout

    # the analysis commands on the sweep's own runs
    from analysis import plots, report, tables

    runs, out = str(tmp_path / "runs"), tmp_path / "analysis"
    assert tables.main([runs, "--out", str(out / "tables")]) == 0
    assert "| pam " in (out / "tables" / "main.md").read_text()
    assert plots.main([runs, "--out", str(out / "plots")]) == 0
    assert len(list((out / "plots").glob("*.png"))) >= 3
    assert report.main([runs, "--out", str(out / "report.html")]) == 0
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 3


def test_failed_run_does_not_stop_the_others(tmp_path):
    grid = _grid(tmp_path, seeds=(0,))
    # lr so large that the loss overflows: the run fails, the sweep goes on and exits 1.
    out = run_sweep(tmp_path, grid, "train.lr=1e30")
    assert out.returncode == 1
    assert out.stdout.count("FAILED") == 2 and "lower train.lr" in out.stdout


def test_compare_grid_covers_every_variant(tmp_path):
    import variants

    grid = load_grid(Path(__file__).parent.parent / "experiments" / "compare.yaml")
    specs = expand(grid, tmp_path)
    arms = {(s.cfg.model.variant, s.cfg.model.head) for s in specs}
    # every variant, and DANet's matched control: none with the dual head
    assert arms == {(v, "auto") for v in variants.available()} | {("none", "dual")}
    assert len(specs) == grid_seeds(grid) * (len(variants.available()) + 1)


def grid_seeds(grid) -> int:
    return len(grid.axes.get("seed", [0]))


def test_variant_axis_all_includes_the_grids_plugins(tmp_path, clean_registries):
    import variants

    (tmp_path / "mine.py").write_text(
        "import variants\nfrom torch import nn\n"
        "variants.register('mine_all', lambda channels: nn.Identity())\n"
    )
    path = tmp_path / "all.yaml"
    path.write_text("plugins: [mine.py]\ngrid:\n  model.variant: all\n")
    grid = load_grid(path)
    names = [v["model.variant"] for v in grid.axes["model.variant"]]
    assert sorted(set(names)) == sorted(variants.available()) and names[-1] == "mine_all"
    assert [s.cfg.model.variant for s in expand(grid, tmp_path)][-1] == "mine_all"


def test_two_local_sweeps_at_once_train_each_run_once(tmp_path):
    """Two `danet sweep` of one grid started together, from the same folder, default runs
    folder: the first claims every run (even those still queued behind max_parallel), the
    second watches them; no run trains twice, no job touches another's files."""
    grid = _grid(tmp_path, seeds=(0,))
    args = [sys.executable, "-m", "danet.cli", "sweep", str(grid), "--no-report",
            "launcher.max_parallel=1"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in "ab"
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stdout = [o[0] for o in outs]
    assert sum(o.count("  start ") for o in stdout) == 2, stdout
    assert sum("watching 2 runs" in o for o in stdout) == 1, stdout
    assert sum(o.count("  done ") for o in stdout) == 4  # each sweep reports both runs
    sweep = tmp_path / "runs" / "mini"
    for run_dir in sweep.iterdir():
        if run_dir.name.startswith("."):
            continue
        assert not (run_dir / "error.json").exists()
        steps = [json.loads(x).get("iteration") for x in (run_dir / "log.jsonl").open()]
        assert steps[:4] == [1, 2, 3, 4] and "resume" not in (run_dir / "log.jsonl").read_text()
    status = subprocess.run([sys.executable, "-m", "danet.cli", "status", str(grid)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "2 done" in status.stdout, status.stdout + status.stderr


def test_keys_added_later_leave_existing_run_ids_alone():
    """A run made before `plugins`, `data.ignore_index` and `eval.every` existed keeps its
    folder: at their defaults those keys are left out of the id (config.ADDED_LATER)."""
    from danet import config as C

    assert C.run_id(C.Config()) == "danet-tiny-synthetic-s0-34fbd820"  # the id before them
    assert C.run_id(C.build(None, ["eval.every=100"])) != "danet-tiny-synthetic-s0-34fbd820"


def test_status_of_a_grid_lists_every_run_new_pending_running_done_failed(tmp_path):
    """`danet status GRID` shows the grid's runs whatever their state, never-submitted ones
    included, with progress, loss, time and ETA; `--json` gives the same for scripts."""
    grid = _grid(tmp_path, seeds=(0, 1, 2))
    specs = expand(load_grid(grid), tmp_path / "runs")
    done, failed, running, pending = (s.run_dir for s in specs[:4])
    for run_dir in (done, failed, running, pending):
        run_dir.mkdir(parents=True)
    (done / "result.json").write_text(json.dumps({"miou": 0.5, "train_time_s": 12.0}))
    (failed / "job.json").write_text(json.dumps({"job_id": "1", "submitted": 1.0}))
    (failed / "error.json").write_text(json.dumps({"message": "Diverged: loss nan", "time": 2.0}))
    alive = subprocess.Popen(["sleep", "60"])  # stands for the local jobs' processes
    try:
        for run_dir in (running, pending):
            (run_dir / "job.json").write_text(json.dumps({
                "job_id": str(alive.pid), "cluster": "local", "host": os.uname().nodename,
                "submitted": 1.0, "stderr": str(run_dir / "log.err")}))
        (running / "log.jsonl").write_text(json.dumps({"iteration": 2, "loss": 0.9, "time": 3.0}))
        out, data = (
            subprocess.run([sys.executable, "-m", "danet.cli", "status", str(grid), *extra],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
            for extra in ([], ["--json"])
        )
    finally:
        alive.kill()
        alive.wait()
    assert out.returncode == 0, out.stderr
    assert "1 done, 1 failed, 2 new, 1 pending, 1 running" in out.stdout
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if "-s" in line}
    assert list(rows) == [s.run_id for s in specs]  # the grid's order, new runs too
    assert rows[running.name].split()[1:4] == ["running", "2/4", "0.900"]
    assert "0:03" in rows[running.name] and "Diverged: loss nan" in rows[failed.name]
    runs = {r["run"]: r for r in json.loads(data.stdout)["runs"]}
    assert runs[running.name]["eta_s"] == pytest.approx(3.0)  # 2 left at 1.5 s each
    assert runs[done.name]["miou"] == 0.5 and runs[done.name]["train_s"] == 12.0
    assert [runs[s.run_id]["state"] for s in specs[4:]] == ["new", "new"]


def test_a_local_sweep_gives_each_run_its_own_gpu(tmp_path, monkeypatch):
    """submitit's local executor hides every GPU from a job it gives none (CUDA_VISIBLE_DEVICES
    empty): the sweep hands each run GPUs of its own, one run per GPU by default. Here the
    machine is said to have GPUs 0 and 1 (CPU runs: train.device=auto finds none)."""
    from slurm import local_gpus
    from slurm.grid import default_parallel
    from slurm.launch import launch

    monkeypatch.setattr(local_gpus, "local_gpus", lambda: [0, 1])
    monkeypatch.setattr("slurm.launch.local_gpus", lambda: [0, 1])
    grid = load_grid(_grid(tmp_path, seeds=(0, 1)))
    specs = expand(grid, tmp_path / "runs")[:3]
    launcher = grid.launcher
    launcher.max_parallel = default_parallel(specs[0].cfg, launcher)
    assert launcher.max_parallel == 2  # one run per GPU, not one per core
    lines: list[str] = []
    outcomes = launch(specs, tmp_path / "runs" / grid.name, launcher, echo=lines.append)
    assert [o.state for o in outcomes] == ["finished"] * 3, lines
    starts = [line for line in lines if line.startswith("  start")]
    assert [s.rsplit("GPU ", 1)[1] for s in starts[:2]] == ["0", "1"]  # each its own
    gpus = [json.loads((s.run_dir / "job.json").read_text())["gpus"] for s in specs]
    assert gpus[:2] == [[0], [1]] and gpus[2] in ([0], [1])  # the third: a GPU freed


def test_gpus_for_a_run():
    from danet import config as C
    from danet.errors import DanetError
    from slurm.local_gpus import gpus_for, parallel_runs

    auto, cpu = C.Config(), C.build(None, ["train.device=cpu"])
    pinned = C.build(None, ["train.device=cuda:1"])
    assert gpus_for(auto, 1, [], set()) == [] and gpus_for(cpu, 1, [0, 1], set()) == []
    assert gpus_for(auto, 1, [2, 3], {2}) == [3] and gpus_for(auto, 1, [2, 3], {2, 3}) is None
    assert gpus_for(auto, 2, [0, 1, 2, 3], {1}) == [0, 2]  # DDP: one per process
    assert gpus_for(pinned, 1, [0, 1], set()) == [0, 1]  # cuda:1 must mean GPU 1
    assert gpus_for(pinned, 1, [0, 1], {0}) is None
    with pytest.raises(DanetError, match="tasks_per_node=4 needs 4 GPUs a run"):
        gpus_for(auto, 4, [0, 1], set())
    assert parallel_runs(auto, 2, [0, 1, 2, 3]) == 2 and parallel_runs(cpu, 1, [0, 1]) == 0
