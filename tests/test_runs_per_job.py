"""launcher.runs_per_job: a local job trains several runs one after another in one process (its
imports paid once). Each run must be exactly what a job of its own gives, a failing run must
not take the job's later runs with it, and a bad setting is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from danet.engine import checkpoint
from danet.errors import DanetError
from slurm.grid import expand, load_grid
from slurm.launch import job_chunks, launch

from .conftest import tiny_grid


def _grid(tmp_path: Path, name: str, runs_per_job: int, **axes) -> Path:
    path = tiny_grid(tmp_path / f"{name}.yaml", name, "train.tensorboard=false")
    data = yaml.safe_load(path.read_text())
    data["grid"].update(axes)
    data["launcher"]["runs_per_job"] = runs_per_job
    path.write_text(yaml.safe_dump(data))
    return path


def _launch(path: Path, runs: Path) -> tuple[list, list[str], list]:
    grid = load_grid(path)
    specs = expand(grid, runs)
    lines: list[str] = []
    outcomes = launch(specs, runs / grid.name, grid.launcher, echo=lines.append)
    return specs, lines, outcomes


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint.list_checkpoints(run_dir)[-1], weights_only=False)["model"]


def test_runs_sharing_a_job_train_exactly_as_runs_of_their_own(tmp_path):
    shared, lines, outcomes = _launch(_grid(tmp_path, "shared", 2, seed=[0, 1]), tmp_path / "a")
    assert [o.state for o in outcomes] == ["finished"] * 4, lines
    jobs = [json.loads((s.run_dir / "job.json").read_text())["job_id"] for s in shared]
    assert jobs[0] == jobs[1] != jobs[2] == jobs[3]  # two jobs of two runs, in grid order
    assert sum(line.startswith("  start ") for line in lines) == 2
    assert sum(line.startswith("  next ") for line in lines) == 2
    assert sum(line.startswith("  done ") for line in lines) == 4

    alone, lines, outcomes = _launch(_grid(tmp_path, "alone", 1, seed=[0, 1]), tmp_path / "b")
    assert [o.state for o in outcomes] == ["finished"] * 4, lines
    assert len({json.loads((s.run_dir / "job.json").read_text())["job_id"] for s in alone}) == 4
    for a, b in zip(shared, alone):
        assert a.run_id == b.run_id  # the launcher is not part of a run's config
        ra, rb = (json.loads((s.run_dir / "result.json").read_text()) for s in (a, b))
        # exact by construction: one thread, the same kernels on this machine, and every run
        # seeded and set up from its own config (nothing carries over from the job's last run)
        assert ra["per_class_iou"] == rb["per_class_iou"]
        wa, wb = _weights(a.run_dir), _weights(b.run_dir)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    seeds = [_weights(s.run_dir) for s in shared[:2]]  # the comparison can tell runs apart
    assert not all(torch.equal(seeds[0][k], seeds[1][k]) for k in seeds[0])


def test_a_failing_run_leaves_the_next_run_of_its_job_to_train(tmp_path):
    # lr so large that the loss overflows: the first run fails, the job goes on to the second
    path = _grid(tmp_path, "fail", 2, **{"train.lr": [1e30, 0.01]})
    data = yaml.safe_load(path.read_text())
    data["grid"]["model.variant"] = ["none"]
    path.write_text(yaml.safe_dump(data))
    specs, lines, outcomes = _launch(path, tmp_path / "runs")
    assert [o.state for o in outcomes] == ["failed", "finished"], lines
    assert "lower train.lr" in outcomes[0].message and "lower train.lr" in "\n".join(lines)
    assert (specs[0].run_dir / "error.json").exists()
    assert (specs[1].run_dir / "result.json").exists()
    jobs = {json.loads((s.run_dir / "job.json").read_text())["job_id"] for s in specs}
    assert len(jobs) == 1


def test_jobs_take_consecutive_runs_of_one_device_setting(tmp_path):
    from danet import config as C
    from slurm.grid import RunSpec

    def spec(name: str, device: str) -> RunSpec:
        return RunSpec(name, C.build(None, [f"train.device={device}"]), tmp_path / name)

    runs = [spec("a", "cpu"), spec("b", "cpu"), spec("c", "cpu"), spec("d", "auto"),
            spec("e", "auto")]
    assert [[s.run_id for s in c] for c in job_chunks(runs, 2)] == [
        ["a", "b"], ["c"], ["d", "e"]]
    assert [len(c) for c in job_chunks(runs, 1)] == [1] * 5


@pytest.mark.parametrize(
    ("launcher", "message"),
    [
        ({"runs_per_job": 0}, "'launcher.runs_per_job' must be 1 or more, got 0"),
        ({"runs_per_job": 2, "tasks_per_node": 2},
         "launcher.runs_per_job=2 needs runs of one process each, not DDP "
         "(launcher.tasks_per_node=2, launcher.nodes=1); set launcher.runs_per_job=1"),
    ],
)
def test_a_bad_runs_per_job_is_one_line_naming_the_file(tmp_path, launcher, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "launcher": launcher}))
    with pytest.raises(DanetError) as e:
        load_grid(path)
    assert str(e.value) == f"{path}: {message}"


def test_a_job_killed_mid_run_fails_that_run_and_leaves_its_next_run_unclaimed(tmp_path):
    """The job's process dies (out of memory, kill -9): the run it was training is reported
    failed and stays resumable from its checkpoint; the job's next run was never begun and is
    left as if unchosen. The next sweep submits both: no run is lost."""
    import os
    import signal
    import threading

    from slurm.status import run_state

    from .conftest import wait_for

    path = _grid(tmp_path, "killed", 2, seed=[0, 1])
    data = yaml.safe_load(path.read_text())
    data["grid"]["model.variant"] = ["none"]
    data["config"]["train"].update(iterations=5000, checkpoint_every=1)
    path.write_text(yaml.safe_dump(data))
    grid = load_grid(path)
    specs = expand(grid, tmp_path / "runs")
    first, second = specs

    def kill_the_job() -> None:
        try:
            wait_for(lambda: (first.run_dir / "ckpt").is_dir()
                     and any((first.run_dir / "ckpt").glob("*.pt")), 240, "a checkpoint")
        finally:  # killed even if the wait fails, so that the sweep below ends
            job_id = int(json.loads((first.run_dir / "job.json").read_text())["job_id"])
            os.killpg(job_id, signal.SIGKILL)  # a local job runs in a session of its own

    killer = threading.Thread(target=kill_the_job)
    killer.start()
    lines: list[str] = []
    outcomes = launch(specs, tmp_path / "runs" / grid.name, grid.launcher, echo=lines.append)
    killer.join()
    assert [o.state for o in outcomes] == ["failed", "unstarted"], lines
    assert not (second.run_dir / "job.json").exists()
    assert run_state(first.run_dir).state == "stopped"  # resumable: the next sweep takes it
    assert run_state(second.run_dir).state == "new"
    assert checkpoint.latest(first.run_dir) is not None
