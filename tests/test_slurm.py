"""Sweeps through a real single-node Slurm (slurm/local_cluster.sh): job arrays, preemption
and requeue, two sweeps at once, and code snapshots. Skipped where Slurm cannot start."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from danet import config as C
from danet import plugins
from danet.engine.train import run

from .conftest import wait_for

pytestmark = pytest.mark.slurm
REPO = Path(__file__).parent.parent
SMALL = {
    "data": {"image_size": 64, "crop_size": 64, "train_size": 16, "val_size": 4},
    "train": {"batch_size": 2, "iterations": 4, "checkpoint_every": 2, "log_every": 1,
              "threads": 1},
}


def _grid(tmp_path: Path, name: str, grid: dict, config: dict = SMALL, **launcher) -> Path:
    path = tmp_path / f"{name}.yaml"
    body = {
        "name": name,
        "config": config,
        "grid": grid,
        "launcher": {"cluster": "slurm", "timeout_min": 10, "cpus_per_task": 1, "mem_gb": 1,
                     **launcher},
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _danet(tmp_path: Path, *args: str, cwd: Path = REPO, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "danet.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def _sweep(tmp_path: Path, grid: Path, *extra: str, cwd: Path = REPO):
    return _danet(
        tmp_path, "sweep", str(grid), "--runs-root", str(tmp_path / "runs"),
        "--reports", str(tmp_path / "reports"), *extra, cwd=cwd,
    )


def _head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()


def test_sweep_runs_as_one_job_array_and_writes_the_tables(slurm_cluster, tmp_path):
    grid = _grid(tmp_path, "arr", {"model.variant": ["none", "pam"], "seed": [0, 1]})
    out = _sweep(tmp_path, grid)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 runs: 0 done, 4 to run (slurm executor)" in out.stdout
    assert out.stdout.count("submitted array") == 1 and "4 runs" in out.stdout
    assert out.stdout.count("  done ") == 4
    # the live view's plain lines, from the run folders and the scheduler's queue
    assert re.search(r"^\[\d+:\d\d\] [0-3]/4 done, \d (pending|running)", out.stdout, re.M)
    table = pd.read_csv(tmp_path / "reports" / "arr" / "main.csv")
    assert list(table["Method"]) == ["none", "pam"] and list(table["n"]) == [2, 2]
    jobs = {
        json.loads(p.read_text())["job_id"] for p in (tmp_path / "runs" / "arr").glob("*/job.json")
    }
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs}) == 1  # one array, 4 tasks
    for path in (tmp_path / "runs" / "arr").glob("*/result.json"):
        result = json.loads(path.read_text())
        assert "/.code/" in result["code_dir"] and result["git"]["commit"] == _head()
    status = _danet(tmp_path, "status", str(tmp_path / "runs" / "arr"))
    assert status.returncode == 0 and "4 done" in status.stdout

    again = _sweep(tmp_path, grid)
    assert "4 runs: 4 done, 0 to run" in again.stdout and "submitted" not in again.stdout


def test_preempted_job_checkpoints_requeues_and_finishes_as_if_uninterrupted(
    slurm_cluster, tmp_path
):
    config = {
        "data": {"image_size": 96, "crop_size": 96, "train_size": 32, "val_size": 4},
        "train": {"batch_size": 4, "iterations": 150, "checkpoint_every": 1000, "log_every": 1,
                  "threads": 1},
    }
    grid = _grid(tmp_path, "pre", {"model.variant": ["pam"]}, config)
    out = _sweep(tmp_path, grid, "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = next((tmp_path / "runs" / "pre").glob("pam-*"))

    def iteration() -> int:
        try:
            lines = (run_dir / "log.jsonl").read_text().splitlines()
        except OSError:
            return 0
        return max([json.loads(x).get("iteration", 0) for x in lines] or [0])

    wait_for(lambda: iteration() >= 5, 180, "training to start")
    job_id = json.loads((run_dir / "job.json").read_text())["job_id"]
    # what Slurm sends signal_delay_s before a time limit, or on preemption
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: (run_dir / "result.json").exists(), 300, "the requeued job to finish")
    events = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    resumes = [e["iteration"] for e in events if e.get("event") == "resume"]
    # checkpoint_every is 1000: the only checkpoint is the one saved on USR2
    assert len(resumes) == 1 and 5 <= resumes[0] < 150
    status = _danet(tmp_path, "status", str(tmp_path / "runs" / "pre"))
    assert "1 done" in status.stdout

    cfg = C.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    whole = run(cfg, tmp_path / "whole", progress=False)
    # exact: the job ran on this machine's CPU with train.threads=1, as this process does
    assert json.loads((run_dir / "result.json").read_text())["miou"] == whole["miou"]


def test_two_sweeps_started_at_once_train_each_run_once(slurm_cluster, tmp_path):
    """Both wait for the results: one submits the array, the other says it watches those runs
    (it does not block on the first sweep's lock while the runs train)."""
    grid = _grid(tmp_path, "twice", {"model.variant": ["none", "pam"], "seed": [0, 1]})
    args = [sys.executable, "-m", "danet.cli", "sweep", str(grid), "--runs-root",
            str(tmp_path / "runs"), "--no-report"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("submitted array") for o in outs) == 1, outs
    watcher = next(o for o in outs if "submitted array" not in o)
    assert "watching 4 runs" in watcher or "4 done, 0 to run" in watcher, outs
    assert sum(o.count("  done ") for o in outs) == 8 or "4 done, 0 to run" in watcher, outs
    sweep = tmp_path / "runs" / "twice"
    assert len(list(sweep.glob("*/result.json"))) == 4
    for log in sweep.glob("*/log.jsonl"):
        steps = [json.loads(x)["iteration"] for x in log.read_text().splitlines()]
        assert steps[:4] == [1, 2, 3, 4] and "resume" not in log.read_text()


PLUGIN = """
import torch
from torch import nn

import variants


class Scale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x * (1 + self.gamma)


variants.register("myscale", Scale)
"""


def test_queued_runs_use_the_code_of_their_submission(slurm_cluster, tmp_path):
    """A user's module in a file outside the repository, compared with none and danet on
    Slurm: the queued runs use the project's code and the plugin's as they were submitted."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    plugin = tmp_path / "mine" / "my_attention.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    submitted = hashlib.sha256(plugin.read_bytes()).hexdigest()
    grid = _grid(tmp_path, "snap", {"model.variant": ["none", "myscale", "danet"]},
                 config={**SMALL, "plugins": [str(plugin)]}, array_parallelism=1)
    out = _sweep(tmp_path, grid, "--no-wait", cwd=clone)
    assert out.returncode == 0, out.stdout + out.stderr
    # edit the code and the plugin right after submission: the queued runs must not see it
    train = clone / "danet" / "engine" / "train.py"
    train.write_text(train.read_text() + '\nraise RuntimeError("edited after submission")\n')
    plugin.write_text(PLUGIN + "# edited after submission\n")
    edited = subprocess.run([sys.executable, "-c", "import danet.engine.train"], cwd=clone,
                            capture_output=True, text=True, timeout=120)
    assert "edited after submission" in edited.stderr  # the clone's own code is broken now
    sweep = tmp_path / "runs" / "snap"
    wait_for(lambda: len(list(sweep.glob("*/result.json"))) == 3, 300, "the three runs")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=clone)
    (snapshot,) = (sweep / ".code").iterdir()
    copy = snapshot / ".plugins" / f"{plugins.module_name(plugin)}.py"
    assert copy.read_text() == PLUGIN  # the snapshot holds the plugin's code as submitted
    for path in sweep.glob("*/result.json"):
        result = json.loads(path.read_text())
        assert result["git"]["commit"] == head.stdout.strip()
        assert Path(result["code_dir"]) == snapshot.resolve()
        (used,) = result["plugins"]
        assert used["path"] == str(plugin) and used["sha256"] == submitted
        assert used["loaded_from"] == str(copy.resolve())
    again = _sweep(tmp_path, grid)  # the same command: nothing to run, the comparison's table
    assert again.returncode == 0 and "3 done, 0 to run" in again.stdout, again.stdout
    table = pd.read_csv(tmp_path / "reports" / "snap" / "main.csv")
    assert list(table["Method"]) == ["none", "myscale", "danet"]  # the grid's order


def test_two_task_job_trains_one_run_with_ddp(slurm_cluster, tmp_path):
    """submitit's environment becomes torch.distributed's: 2 tasks, gloo, SyncBN, batch split."""
    config = {**SMALL, "train": {**SMALL["train"], "batch_size": 4}}
    grid = _grid(tmp_path, "ddp", {"model.variant": ["danet"]}, config, tasks_per_node=2, mem_gb=2)
    out = _sweep(tmp_path, grid)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(next((tmp_path / "runs" / "ddp").glob("*/result.json")).read_text())
    assert (result["world_size"], result["sync_bn"], result["batch_per_process"]) == (2, True, 2)
