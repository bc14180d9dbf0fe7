"""Stopping a sweep's Slurm jobs by hand (README "Preempt, requeue or cancel by hand"), each
command against the local Slurm: USR2 to the job (preempt: checkpoint, requeue, resume; held
and released meanwhile), USR2 to the batch shell only (kills the job), `scontrol requeue`
(restart from the newest checkpoint), cancelling one run and then the whole sweep by name, the
next sweep's resubmission; what `danet status` says meanwhile (Slurm's PENDING is pending or
requeued, never running); and launcher.max_array_size above the cluster's MaxArraySize,
refused before anything is written."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from danet.cli import main
from danet.engine import checkpoint
from danet.errors import DanetError
from slurm.grid import Launcher
from slurm.launch import max_array_size
from slurm.status import parse_squeue, run_state, slurm_queue

from .conftest import wait_for

pytestmark = pytest.mark.slurm
REPO = Path(__file__).parent.parent


def _config(iterations: int, checkpoint_every: int) -> dict:
    """Small enough to start in seconds, long enough to be mid-training when a test acts."""
    return {
        "data": {"image_size": 96, "crop_size": 96, "train_size": 32, "val_size": 4},
        "train": {"batch_size": 4, "iterations": iterations, "checkpoint_every": checkpoint_every,
                  "log_every": 1, "threads": 1},
    }


def _danet(*args: str) -> subprocess.CompletedProcess:
    """`danet ARGS` in this process (torch is imported already: seconds saved per call)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _jobs(name: str) -> dict[str, str]:
    """The jobs of one sweep (Slurm names them after it): id -> state."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%i %T"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return parse_squeue(out.stdout)


def _events(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # the line being written
    return records


def _iteration(run_dir: Path) -> int:
    return max([e.get("iteration", 0) for e in _events(run_dir)] or [0])


def _resumes(run_dir: Path) -> list[int]:
    return [e["iteration"] for e in _events(run_dir) if e.get("event") == "resume"]


def _trained_before_resume(run_dir: Path) -> int:
    """The last iteration logged before the first resume."""
    last = 0
    for e in _events(run_dir):
        if e.get("event") == "resume":
            break
        last = max(last, e.get("iteration", 0))
    return last


def _stopped_at(run_dir: Path) -> int | None:
    """The iteration of the run's last `stopped` event (a stop asked by stop.json)."""
    events = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return ([e["iteration"] for e in events if e.get("event") == "stopped"] or [None])[-1]


def _job(run_dir: Path) -> dict:
    return json.loads((run_dir / "job.json").read_text())


def _status(sweep_dir: Path) -> dict[str, dict]:
    """`danet status --json` as run -> its record (state, iteration, resumes, ...)."""
    out = _danet("status", str(sweep_dir), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return {r["run"]: r for r in json.loads(out.stdout)["runs"]}


@pytest.fixture
def sweep(slurm_cluster, tmp_path) -> Iterator[Callable[..., tuple[Path, Path]]]:
    """make(name, axes, iterations, checkpoint_every, **launcher) -> (grid file, sweep folder).
    The jobs of every sweep made are cancelled when the test ends."""
    names: list[str] = []

    def make(name: str, axes: dict, iterations: int = 600, checkpoint_every: int = 1000,
             **launcher) -> tuple[Path, Path]:
        names.append(name)
        grid = tmp_path / f"{name}.yaml"
        body = {
            "name": name,
            "config": _config(iterations, checkpoint_every),
            "grid": axes,
            # snapshot off: the jobs import this checkout, whatever git tracks of it
            "launcher": {"cluster": "slurm", "timeout_min": 20, "cpus_per_task": 1,
                         "mem_gb": 1, "snapshot": False, **launcher},
        }
        grid.write_text(yaml.safe_dump(body, sort_keys=False))
        return grid, tmp_path / "runs" / name

    yield make
    for name in names:
        subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)
    for name in names:
        wait_for(lambda n=name: not _jobs(n), 60, f"the jobs of {name} to end")


def _submit(grid: Path, runs: int) -> list[Path]:
    """`danet sweep --no-wait`; the run folders once every run has trained 5 iterations."""
    out = _danet("sweep", str(grid), "--runs-root", str(grid.parent / "runs"), "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    run_dirs = sorted(p.parent for p in (grid.parent / "runs").glob("*/*/job.json"))
    assert len(run_dirs) == runs
    wait_for(lambda: all(_iteration(r) >= 5 for r in run_dirs), 180, "training to start")
    return run_dirs


# ---------------------------------------------------------------- without a cluster


def test_parse_squeue_keeps_each_array_task_and_its_state():
    text = "12_0 RUNNING\n12_1 PENDING\n13 REQUEUE_HOLD\n\n14 COMPLETING\n"
    assert parse_squeue(text) == {
        "12_0": "RUNNING", "12_1": "PENDING", "13": "REQUEUE_HOLD", "14": "COMPLETING",
    }


@pytest.mark.parametrize(
    "slurm_state, logged, expected",
    [
        ("RUNNING", 4, "running"),
        ("COMPLETING", 4, "running"),
        ("RUNNING", 0, "running"),  # started, not yet through its first iteration
        ("PENDING", 0, "pending"),
        ("CONFIGURING", 0, "pending"),
        ("PENDING", 4, "requeued"),
        ("REQUEUE_HOLD", 4, "requeued"),
        (None, 4, "stopped"),  # gone from the queue
    ],
)
def test_run_state_follows_the_slurm_state(tmp_path, slurm_state, logged, expected):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").write_text(json.dumps({"job_id": "7_1", "cluster": "slurm"}))
    (run_dir / "config.yaml").write_text("train: {iterations: 10}\n")
    (run_dir / "log.jsonl").write_text("".join(f'{{"iteration": {i}}}\n' for i in range(1, 5)))
    if not logged:
        (run_dir / "log.jsonl").unlink()
    queue = {"7_0": "RUNNING", "8": "PENDING"}
    if slurm_state:
        queue["7_1"] = slurm_state
    state = run_state(run_dir, queue)
    assert (state.state, state.iteration, state.iterations) == (expected, logged, 10)


@pytest.mark.parametrize(
    "config, wanted, expected",
    [
        ("MaxArraySize            = 8\n", 0, 8),
        ("MaxArraySize            = 8\n", 5, 5),
        ("MaxArraySize            = 8\n", 8, 8),  # indices 0-7: 8 runs fit
        ("MaxArraySize            = 8\n", 9, None),
        ("MaxArraySize            = 0\n", 0, 1),  # no arrays: one plain job per run
        ("MaxArraySize            = 0\n", 2, None),
        (OSError("no scontrol"), 0, 1000),  # cannot ask: Slurm's default
        (OSError("no scontrol"), 5000, 5000),
    ],
)
def test_max_array_size_keeps_to_the_clusters_limit(monkeypatch, config, wanted, expected):
    def scontrol(*args, **kwargs) -> subprocess.CompletedProcess:
        if isinstance(config, Exception):
            raise config
        return subprocess.CompletedProcess(args, 0, stdout=f"ClusterName = x\n{config}")

    monkeypatch.setattr(subprocess, "run", scontrol)
    launcher = Launcher(cluster="slurm", max_array_size=wanted)
    if expected is not None:
        assert max_array_size(launcher) == expected
        return
    with pytest.raises(DanetError) as e:
        max_array_size(launcher)
    assert f"launcher.max_array_size={wanted} is above" in str(e.value)
    assert "MaxArraySize=" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the local Slurm


def test_usr2_to_the_job_checkpoints_requeues_and_resumes(sweep):
    """`scancel --signal=USR2 JOB` reaches the job step: submitit saves and requeues it.
    While Slurm holds it (`scontrol hold`, until `scontrol release`), `danet status` says
    requeued, and squeue PENDING."""
    grid, sweep_dir = sweep("ctl-usr2", {"seed": [0]})
    (run_dir,) = _submit(grid, 1)
    job = _job(run_dir)
    subprocess.run(["scancel", "--signal=USR2", job["job_id"]], check=True, timeout=30)

    def requeued_and_pending() -> bool:
        queue = slurm_queue()  # one answer for both: Slurm's state and danet's
        return queue.get(job["job_id"]) == "PENDING" and run_state(run_dir, queue).state == (
            "requeued"
        )

    wait_for(requeued_and_pending, 60, "squeue PENDING and state requeued")
    # held, it stays PENDING (requeued jobs wait cred_expire, 10 s here, before they may start)
    subprocess.run(["scontrol", "hold", job["job_id"]], check=True, timeout=30)
    st = _status(sweep_dir)[run_dir.name]
    assert (st["state"], st["resumes"]) == ("requeued", 0) and st["iteration"] >= 5
    assert _jobs("ctl-usr2") == {job["job_id"]: "PENDING"}
    subprocess.run(["scontrol", "release", job["job_id"]], check=True, timeout=30)
    wait_for(lambda: _resumes(run_dir), 120, "the job to resume")
    (resumed,) = _resumes(run_dir)
    # checkpoint_every is 1000: the one checkpoint is the one the USR2 handler saved
    assert resumed >= 5 and (run_dir / "ckpt" / f"iter_{resumed:07d}.pt").is_file()
    assert "Requeued job" in Path(job["stdout"]).read_text()
    wait_for(lambda: run_state(run_dir).state == "running", 60, "state running again")


def test_usr2_to_the_batch_shell_kills_the_job(sweep):
    """`--batch` signals only the batch script's shell, which USR2 kills: the job ends, the
    training step is killed without its handler running, nothing is saved or requeued."""
    grid, _ = sweep("ctl-batch", {"seed": [0]})
    (run_dir,) = _submit(grid, 1)
    job = _job(run_dir)
    subprocess.run(["scancel", "--signal=USR2", "--batch", job["job_id"]], check=True, timeout=30)
    wait_for(lambda: not _jobs("ctl-batch"), 60, "the job to leave the queue")
    assert not _resumes(run_dir) and not list((run_dir / "ckpt").glob("iter_*.pt"))
    assert all("SIGUSR2" not in Path(job[k]).read_text() for k in ("stdout", "stderr"))
    assert run_state(run_dir).state == "stopped"


def test_scontrol_requeue_restarts_from_the_newest_checkpoint(sweep):
    """`scontrol requeue` kills the job (submitit ignores SIGTERM; SIGKILL follows KillWait
    later) and queues it again: it resumes from the newest checkpoint on disk."""
    grid, _ = sweep("ctl-requeue", {"seed": [0]}, checkpoint_every=10)
    (run_dir,) = _submit(grid, 1)
    job_id = _job(run_dir)["job_id"]
    wait_for(lambda: _iteration(run_dir) >= 15, 120, "a checkpoint")
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    wait_for(lambda: _resumes(run_dir), 120, "the job to resume")
    (first,) = _resumes(run_dir)
    # trained on until SIGKILL, then resumed from the newest checkpoint (a multiple of 10; the
    # one before it if SIGKILL came while it was written)
    before = _trained_before_resume(run_dir)
    assert first % 10 == 0 and first >= 10 and before - 20 < first <= before
    wait_for(lambda: run_state(run_dir).state == "running", 60, "state running again")


def test_cancel_one_run_resubmit_it_then_cancel_the_whole_sweep(sweep):
    """`scancel JOB` stops one run (no checkpoint: SIGTERM is ignored, SIGKILL follows); the
    next `danet sweep` resubmits it and it resumes from its newest checkpoint; `scancel
    --name=SWEEP` stops every job of the sweep, over all its arrays."""
    grid, sweep_dir = sweep("ctl-cancel", {"seed": [0, 1]}, checkpoint_every=10)
    kept, cancelled = _submit(grid, 2)
    wait_for(lambda: _iteration(cancelled) >= 10, 120, "a checkpoint")
    first_job = _job(cancelled)["job_id"]
    subprocess.run(["scancel", first_job], check=True, timeout=30)
    wait_for(lambda: first_job not in _jobs("ctl-cancel"), 60, "the run's job to end")
    states = _status(sweep_dir)
    assert (states[kept.name]["state"], states[cancelled.name]["state"]) == ("running", "stopped")

    out = _danet("sweep", str(grid), "--runs-root", str(grid.parent / "runs"), "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 runs: 0 done, 1 to run, 1 already queued or running" in out.stdout
    second_job = _job(cancelled)["job_id"]
    assert second_job.split("_")[0] != first_job.split("_")[0]  # a new job
    wait_for(lambda: _resumes(cancelled), 120, "the resubmitted run to resume")
    assert _resumes(cancelled)[0] % 10 == 0 and _resumes(cancelled)[0] >= 10

    out = _danet("cancel", str(grid), "--runs-root", str(grid.parent / "runs"))
    assert out.returncode == 0 and "cancelled 2 runs (scancel of 2 Slurm jobs)" in out.stdout
    wait_for(lambda: not _jobs("ctl-cancel"), 60, "every job of the sweep to end")
    # cancelled, not failed: each stopped at a step's end (stop.json) within Slurm's KillWait
    assert {run_state(r).state for r in (kept, cancelled)} == {"cancelled"}
    assert not any((r / "error.json").exists() for r in (kept, cancelled))
    stopped = [_stopped_at(r) for r in (kept, cancelled)]
    assert all(s is not None and checkpoint.latest(r)["iteration"] == s
               for s, r in zip(stopped, (kept, cancelled)))


def test_status_says_pending_while_slurm_holds_a_new_job(sweep):
    grid, sweep_dir = sweep("ctl-held", {"seed": [0]}, sbatch={"hold": True})
    out = _danet("sweep", str(grid), "--runs-root", str(grid.parent / "runs"), "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(_jobs("ctl-held").values()) == ["PENDING"]
    assert [(r["state"], r["iterations"]) for r in _status(sweep_dir).values()] == [("pending", 0)]


def test_max_array_size_above_the_clusters_is_refused_before_anything_is_written(
    slurm_cluster, sweep
):
    conf = (slurm_cluster / "slurm.conf").read_text()
    limit = int(re.search(r"^MaxArraySize=(\d+)$", conf, re.M).group(1))
    assert max_array_size(Launcher(cluster="slurm")) == limit  # up to MaxArraySize runs fit
    assert max_array_size(Launcher(cluster="slurm", max_array_size=limit)) == limit
    grid, sweep_dir = sweep("ctl-array", {"seed": [0, 1]})
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "sweep", str(grid), "--runs-root",
         str(grid.parent / "runs"), f"launcher.max_array_size={limit + 1}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"launcher.max_array_size={limit + 1} is above" in out.stderr
    assert f"MaxArraySize={limit}" in out.stderr and f"max_array_size={limit} or less" in out.stderr
    assert not sweep_dir.exists() and not _jobs("ctl-array")
