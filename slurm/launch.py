"""Launch a sweep's runs through submitit: on this machine, or as Slurm job arrays.

A run whose result.json exists is done and skipped; one whose job is still queued or running
is left alone; a failed one is resubmitted only with retry_failed; any other is submitted and
resumes from the newest checkpoint in its folder. The decisions and submissions of one sweep
folder happen under a file lock, so two sweeps started at once never submit a run twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import submitit

from danet import config as C
from danet.errors import DanetError
from danet.utils import atomic_write_json, git_state
from slurm.grid import Launcher, RunSpec
from slurm.status import run_state, slurm_queue

# Without Slurm accounting, submitit warns at every poll that sacct failed; squeue still
# reports the jobs' states, so the warning says nothing a user can act on.
logging.getLogger("submitit").addFilter(lambda r: "Bypassing sacct error" not in r.getMessage())


class TrainJob:
    """The submitit callable. Imports happen inside methods to keep the pickle light;
    a requeued job finds its progress in the checkpoint on disk, never in the pickle."""

    def __init__(self, cfg: dict, run_dir: str) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def __call__(self) -> float:
        from danet.engine.train import run

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for DDP
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            result = run(C.from_dict(self.cfg, f"{self.run_dir}/config.yaml"), Path(self.run_dir))
        except Exception as e:
            if env.global_rank == 0:
                atomic_write_json(
                    Path(self.run_dir) / "error.json",
                    {"message": f"{type(e).__name__}: {e}".splitlines()[0], "job_id": env.job_id,
                     "time": time.time()},
                )  # fmt: skip
            raise
        return result["miou"]

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Slurm's USR2 (time limit near, or preemption): save the last finished iteration,
        then submitit requeues the job, which resumes from that checkpoint."""
        from danet.engine.train import save_for_preemption

        save_for_preemption()
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir))


@dataclass
class Outcome:
    spec: RunSpec
    state: str  # done (before), active (queued or running elsewhere), finished, failed, submitted
    message: str = ""
    log: str = ""


@contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[None]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".launch.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # a second `danet sweep` waits here, then sees the jobs
        yield


def max_array_size(launcher: Launcher) -> int:
    if launcher.max_array_size:
        return launcher.max_array_size
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
        ).stdout
        for line in out.splitlines():
            if line.split("=")[0].strip() == "MaxArraySize":
                return int(line.split("=")[1])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    return 1000  # Slurm's default MaxArraySize is 1001 (indices 0-1000)


def make_executor(folder: Path, launcher: Launcher) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster=launcher.cluster)
    params: dict = {"timeout_min": int(launcher.timeout_min)}
    if launcher.cluster == "slurm":
        params.update(
            nodes=launcher.nodes,
            tasks_per_node=launcher.tasks_per_node,
            slurm_signal_delay_s=launcher.signal_delay_s,
        )
        optional = {
            "slurm_partition": launcher.partition,
            "gpus_per_node": launcher.gpus_per_node,
            "cpus_per_task": launcher.cpus_per_task,
            "mem_gb": launcher.mem_gb,
            "slurm_qos": launcher.qos,
            "slurm_account": launcher.account,
            "slurm_constraint": launcher.constraint,
            "slurm_additional_parameters": launcher.sbatch,
            "slurm_array_parallelism": launcher.array_parallelism,
        }
        params.update({k: v for k, v in optional.items() if v})
    elif launcher.nodes > 1 or launcher.tasks_per_node > 1:
        params.update(tasks_per_node=launcher.tasks_per_node)
    executor.update_parameters(**params)
    return executor


@contextmanager
def _snapshot(sweep_dir: Path, launcher: Launcher) -> Iterator[None]:
    """Jobs import the code copied at submission, so later edits change no queued run."""
    if launcher.cluster != "slurm" or not launcher.snapshot:
        yield
        return
    state = git_state()
    if state.get("commit") is None:
        raise DanetError("launcher.snapshot needs a git checkout; run from one, or snapshot: false")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = sweep_dir.resolve() / ".code" / f"{stamp}-{state['commit'][:8]}"
    with submitit.helpers.RsyncSnapshot(snapshot_dir=target):
        atomic_write_json(target / "SNAPSHOT.json", {**state, "taken_at": stamp})
        yield


def _record(spec: RunSpec, job: submitit.Job, launcher: Launcher) -> None:
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "job_id": str(job.job_id),
        "cluster": launcher.cluster,
        "host": os.uname().nodename,
        "submitted": time.time(),
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
    }
    atomic_write_json(spec.run_dir / "job.json", record)


def launch(
    specs: list[RunSpec],
    sweep_dir: Path,
    launcher: Launcher,
    retry_failed: bool = False,
    wait: bool = True,
    echo=print,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    todo: list[RunSpec] = []
    with sweep_lock(sweep_dir):
        queue = slurm_queue() if launcher.cluster == "slurm" else None
        for spec in specs:
            state = run_state(spec.run_dir, queue)
            if state.state == "done":
                outcomes.append(Outcome(spec, "done"))
            elif state.state in ("pending", "running", "requeued"):
                outcomes.append(Outcome(spec, "active", f"job {state.job_id}"))
            elif state.state == "failed" and not retry_failed:
                outcomes.append(Outcome(spec, "failed", state.message, state.log))
            else:
                todo.append(spec)
        counts = {k: sum(o.state == k for o in outcomes) for k in ("done", "active", "failed")}
        echo(
            f"{len(specs)} runs: {counts['done']} done, {len(todo)} to run"
            + (f", {counts['active']} already queued or running" if counts["active"] else "")
            + (
                f", {counts['failed']} failed (--retry-failed resubmits)"
                if counts["failed"]
                else ""
            )
            + (f" ({launcher.max_parallel} at once, " if launcher.cluster != "slurm" else " (")
            + f"{launcher.cluster} executor)"
        )
        if not todo:
            return outcomes
        folder = sweep_dir / ".submitit"
        if launcher.cluster == "slurm":
            return outcomes + _launch_slurm(todo, sweep_dir, folder, launcher, wait, echo)
    return outcomes + _launch_local(todo, folder, launcher, echo)


def _launch_slurm(todo, sweep_dir, folder, launcher, wait, echo) -> list[Outcome]:
    with _snapshot(sweep_dir, launcher):
        executor = make_executor(folder, launcher)
        executor.update_parameters(name=sweep_dir.name)
        size = max_array_size(launcher)
        running = []
        for first in range(0, len(todo), size):  # one array per MaxArraySize runs
            chunk = todo[first : first + size]
            with executor.batch():
                jobs = [executor.submit(TrainJob(C.to_dict(s.cfg), str(s.run_dir))) for s in chunk]
            for job, spec in zip(jobs, chunk):
                _record(spec, job, launcher)
                running.append((job, spec))
            echo(f"  submitted array {jobs[0].job_id.split('_')[0]}: {len(chunk)} runs")
    if not wait:
        return [Outcome(spec, "submitted", f"job {job.job_id}") for job, spec in running]
    return _wait(running, 10.0, echo, slurm=True)


def _launch_local(todo, folder, launcher, echo) -> list[Outcome]:
    executor = make_executor(folder, launcher)
    running: list = []
    done: list[Outcome] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < launcher.max_parallel:
            spec = queue.pop(0)
            resumed = " (resuming)" if (spec.run_dir / "ckpt").exists() else ""
            executor.update_parameters(name=spec.run_id)
            job = executor.submit(TrainJob(C.to_dict(spec.cfg), str(spec.run_dir)))
            _record(spec, job, launcher)
            echo(f"  start  {spec.run_id}{resumed}  job {job.job_id}")
            running.append((job, spec))
        done += _wait(running, 0.5 if launcher.cluster == "debug" else 2.0, echo, until_one=True)
    return done


def _wait(
    running: list, poll: float, echo, until_one: bool = False, slurm: bool = False
) -> list[Outcome]:
    """Wait for the jobs (all of them, or the first to end); `running` is updated in place."""
    out: list[Outcome] = []
    while running:
        for job, spec in [r for r in running if r[0].done()]:
            running.remove((job, spec))
            out.append(_finish(job, spec, echo))
        queue = (
            slurm_queue() if running and running[0][0].__class__.__name__ == "SlurmJob" else None
        )
        for job, spec in list(running):
            # Without Slurm accounting submitit never learns of a job killed before it wrote
            # its result (scancel, node failure, time limit): the queue no longer holds it.
            if (
                queue is not None
                and run_state(spec.run_dir, queue).state == "stopped"
                and not job.done()
            ):
                running.remove((job, spec))
                message = "the job ended without a result (cancelled, killed or out of time)"
                echo(f"  FAILED {spec.run_id}: {message}  (log: {job.paths.stderr})")
                out.append(Outcome(spec, "failed", message, str(job.paths.stderr)))
        if out and until_one:
            return out
        if running:
            time.sleep(poll)
    return out


def job_error(text: str) -> str:
    """The last line of the job's own traceback inside submitit's FailedJobError text, which
    frames it between dashed lines and appends the log paths."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    rules = [i for i, ln in enumerate(lines) if set(ln) == {"-"}]
    if len(rules) >= 2:
        lines = lines[rules[0] + 1 : rules[1]]
    return lines[-1] if lines else ""


def _finish(job: submitit.Job, spec: RunSpec, echo) -> Outcome:
    log = str(job.paths.stderr) if hasattr(job, "paths") else ""
    try:
        miou = job.results()[0]  # a DDP job has one result per task; rank 0's is the run's
    except Exception as e:  # the job's own exception, re-raised by submitit with its traceback
        message = job_error(str(e)) or type(e).__name__
        echo(f"  FAILED {spec.run_id}: {message}  (log: {os.path.relpath(log) if log else '-'})")
        return Outcome(spec, "failed", message, log)
    echo(f"  done   {spec.run_id}  mIoU {100 * miou:.2f}")
    return Outcome(spec, "finished", log=log)
