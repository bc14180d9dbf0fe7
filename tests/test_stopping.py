"""Stopping a local sweep as a user does: Ctrl-C (SIGINT to the terminal's process group).
Each run stops at a step's end with a checkpoint, no process of the sweep is left, and the same
command resumes the runs to the results of an uninterrupted sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from danet import config as C
from danet.engine import checkpoint
from danet.engine.train import run
from danet.run_folder import STOP

from .conftest import tiny_grid, wait_for

# Long enough to be interrupted mid-run: a tiny run does 100-200 steps a second here and the
# interrupt comes up to about 0.6 s after step 3 (at 120, a fast run sometimes finished first).
ITERATIONS = 600
CHECKPOINT_EVERY = 1000  # no periodic checkpoint: the one at the stop is the stop's own


def _grid(tmp_path: Path) -> Path:
    return tiny_grid(tmp_path / "stop.yaml", "stop", f"train.iterations={ITERATIONS}",
                     f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.tensorboard=false")


def _iteration(run_dir: Path) -> int:
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return max([json.loads(ln).get("iteration", 0) for ln in lines if ln.endswith("}")] or [0])


def _group(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (a local job's controller and its tasks)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _sweep(grid: Path, cwd: Path) -> subprocess.Popen:
    # its own session, as a shell starts a command: the test's SIGINT to that group is Ctrl-C
    return subprocess.Popen(
        [sys.executable, "-m", "danet.cli", "sweep", str(grid), "--no-report"], cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _interrupted(
    grid: Path, cwd: Path, training: Callable[[], bool], interrupt: Callable[[int], None]
) -> tuple[int, str, str]:
    """`danet sweep GRID` from `cwd`; once `training()` holds, `interrupt(its pid)`. Returns
    (exit code, stdout, stderr); nothing it started outlives the call."""
    proc = _sweep(grid, cwd)
    try:
        wait_for(training, 240, "the runs training")
        interrupt(proc.pid)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def _job_ids(sweep_dir: Path) -> list[int]:
    return [int(json.loads(p.read_text())["job_id"]) for p in sweep_dir.glob("*/job.json")]


@pytest.mark.slow
def test_ctrl_c_stops_every_run_at_a_checkpoint_and_the_same_command_resumes(tmp_path):
    grid = _grid(tmp_path)
    sweep_dir = tmp_path / "runs" / "stop"
    groups: dict[int, list[int]] = {}

    def ctrl_c(pid: int) -> None:
        groups.update({pgid: _group(pgid) for pgid in _job_ids(sweep_dir)})
        assert all(len(pids) >= 2 for pids in groups.values())  # a controller and its task
        os.killpg(pid, signal.SIGINT)  # Ctrl-C: the whole foreground group

    code, out, err = _interrupted(
        grid, tmp_path, lambda: len(list(sweep_dir.glob("*/log.jsonl"))) == 2
        and all(_iteration(p.parent) >= 3 for p in sweep_dir.glob("*/log.jsonl")), ctrl_c,
    )
    assert code == 130, out + err
    assert "stopping: 2 running runs save a checkpoint" in out
    assert out.count("  stopped ") == 2 and "the same command resumes them" in err
    wait_for(lambda: not any(_group(g) for g in groups), 10, "the jobs' processes to end")
    for run_dir in (p.parent for p in sweep_dir.glob("*/config.yaml")):
        events = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
        (stopped,) = [e["iteration"] for e in events if e.get("event") == "stopped"]
        assert 3 <= stopped < ITERATIONS  # stopped mid-run, before any periodic checkpoint
        newest = checkpoint.latest(run_dir)  # intact: it loads, at the stopped iteration
        assert newest is not None and newest["iteration"] == stopped
        assert not (run_dir / "result.json").exists() and (run_dir / STOP).exists()
    status = subprocess.run([sys.executable, "-m", "danet.cli", "status", str(grid)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "2 stopped" in status.stdout, status.stdout

    again = _sweep(grid, tmp_path)  # the same command
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    assert out.count("(resuming)") == 2 and out.count("  done ") == 2
    for run_dir in (p.parent for p in sweep_dir.glob("*/config.yaml")):
        resumed = json.loads((run_dir / "result.json").read_text())
        straight = run(C.build(run_dir / "config.yaml"), tmp_path / "straight" / run_dir.name,
                       progress=False)
        # exact by construction: one thread, the same kernels on this machine, and a resume
        # restores weights, optimiser, random state and the data order
        assert resumed["per_class_iou"] == straight["per_class_iou"]
        a = torch.load(checkpoint.list_checkpoints(run_dir)[-1], weights_only=False)["model"]
        b = torch.load(checkpoint.list_checkpoints(tmp_path / "straight" / run_dir.name)[-1],
                       weights_only=False)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ctrl_c_stops_a_job_of_several_runs_and_its_waiting_runs_never_start(tmp_path):
    """launcher.runs_per_job=2: each job's first run stops at a checkpoint; its second, not yet
    begun, is left unclaimed (no job.json, nothing written); the same command finishes all."""
    import yaml

    grid = _grid(tmp_path)
    data = yaml.safe_load(grid.read_text())
    data["grid"]["seed"] = [0, 1]
    data["launcher"]["runs_per_job"] = 2
    grid.write_text(yaml.safe_dump(data))
    sweep_dir = tmp_path / "runs" / "stop"
    code, out, err = _interrupted(
        grid, tmp_path, lambda: len(list(sweep_dir.glob("*/log.jsonl"))) == 2
        and all(_iteration(p.parent) >= 3 for p in sweep_dir.glob("*/log.jsonl")),
        lambda pid: os.killpg(pid, signal.SIGINT),
    )
    assert code == 130, out + err
    assert "stopping: 2 running runs save a checkpoint" in out and out.count("  stopped ") == 2
    begun = {p.parent.name for p in sweep_dir.glob("*/log.jsonl")}
    waited = {p.name for p in sweep_dir.glob("*-s1-*")}
    assert len(begun) == 2 and all("-s0-" in name for name in begun) and len(waited) == 2
    for name in waited:  # as if the sweep had never chosen them
        assert not (sweep_dir / name / "job.json").exists()
        assert not (sweep_dir / name / "config.yaml").exists()
        assert not (sweep_dir / name / STOP).exists()

    again = _sweep(grid, tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, out + err
    assert out.count("(resuming)") == 2 and out.count("  done ") == 4


@pytest.mark.slow
def test_danet_cancel_stops_a_local_sweep_from_another_terminal(tmp_path, capsys, monkeypatch):
    from danet.cli import main
    from slurm.status import run_state

    grid = tiny_grid(tmp_path / "cancel.yaml", "cancel", "train.iterations=5000",
                     "train.checkpoint_every=1000", "train.tensorboard=false",
                     variants=("pam",))
    sweep_dir = tmp_path / "runs" / "cancel"
    monkeypatch.chdir(tmp_path)  # the other terminal's working folder: the sweep's
    code, out, err = _interrupted(
        grid, tmp_path,
        lambda: any(_iteration(p.parent) >= 3 for p in sweep_dir.glob("*/log.jsonl")),
        lambda pid: main(["cancel", grid.name]),  # as typed: from the sweep's folder, defaults
    )
    assert "cancelled 1 runs (SIGTERM to the local sweep (pid" in capsys.readouterr().out
    assert code == 130 and "  cancelled pam-" in out, out + err
    (run_dir,) = (p.parent for p in sweep_dir.glob("*/config.yaml"))
    assert run_state(run_dir).state == "cancelled"  # not failed: no error.json either
    assert not (run_dir / "error.json").exists()
    stopped = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()][-1]
    assert stopped["event"] == "stopped" and stopped["iteration"] < 5000
    assert checkpoint.latest(run_dir)["iteration"] == stopped["iteration"]


@pytest.mark.slow
def test_a_second_ctrl_c_kills_the_runs_at_once(tmp_path):
    """Steps of about a second: the second Ctrl-C, 0.1 s after the first, comes mid-step, so
    the run is killed, not stopped; nothing of the sweep is left, nothing is torn."""
    grid = tiny_grid(tmp_path / "kill.yaml", "kill", "train.iterations=5000",
                     "data.image_size=384", "data.crop_size=384", "train.batch_size=8",
                     "train.checkpoint_every=1", "train.tensorboard=false",
                     variants=("pam",))
    sweep_dir = tmp_path / "runs" / "kill"
    def ctrl_c_twice(pid: int) -> None:
        os.killpg(pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(pid, signal.SIGINT)

    code, out, err = _interrupted(
        grid, tmp_path,
        lambda: any(_iteration(p.parent) >= 1 for p in sweep_dir.glob("*/log.jsonl")),
        ctrl_c_twice,
    )
    (job,) = _job_ids(sweep_dir)
    assert code == 130 and "  killed pam-" in out, out + err
    wait_for(lambda: not _group(job), 10, "the job's processes to end")
    (run_dir,) = (p.parent for p in sweep_dir.glob("*/config.yaml"))
    assert not (run_dir / "result.json").exists()
    newest = checkpoint.latest(run_dir)  # a periodic checkpoint, whole (written atomically)
    assert newest is not None and newest["iteration"] >= 1


def test_cancel_signals_no_process_of_another_machine(tmp_path, capsys):
    """A run queued by a local sweep on another host (a shared file system): its process id
    means nothing here, so nothing is signalled; the run is still asked to stop and marked
    cancelled, and the note says where to run danet cancel. Given a sweep folder, the resume
    hint does not pretend the folder is a grid."""
    from danet.cli import main
    from slurm.status import run_state

    bystander = subprocess.Popen(["sleep", "60"])  # stands for a process that has that id here
    try:
        run_dir = tmp_path / "runs" / "far" / "pam-tiny-synthetic-s0-00000000"
        run_dir.mkdir(parents=True)
        (run_dir / "job.json").write_text(json.dumps(
            {"cluster": "local", "host": "another-node", "queued_by": bystander.pid,
             "submitted": time.time() - 1}))
        assert run_state(run_dir).state == "pending"
        assert main(["cancel", str(tmp_path / "runs" / "far")]) == 0
        captured = capsys.readouterr()
        assert "cancelled 1 runs (stop.json)" in captured.out, captured.out
        assert "Resume with: the same danet sweep command" in captured.out
        assert "a local sweep on another-node" in captured.err
        assert bystander.poll() is None  # not signalled
        assert (run_dir / STOP).exists()
    finally:
        bystander.kill()
        bystander.wait()
