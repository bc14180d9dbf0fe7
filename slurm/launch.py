"""Launch a sweep's runs through submitit: on this machine, or as Slurm job arrays.

A run whose result.json exists is done and skipped; one whose job is still queued or running
(by this sweep or another) is watched until it ends; a failed one is resubmitted only with
retry_failed; any other is submitted and resumes from the newest checkpoint in its folder.
The decisions of one sweep folder happen under a file lock, and every run chosen is claimed
(its job.json written) before the lock is released, so two sweeps started at once never train
a run twice. Every path handed to a job is absolute: a Slurm job starts in a code snapshot.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import submitit

from danet import config as C
from danet import run_folder as F
from danet.errors import DanetError, one_line
from danet.run_folder import State
from danet.utils import atomic_write_json
from slurm import stopping
from slurm.grid import Launcher, RunSpec
from slurm.local_gpus import gpus_for, local_gpus
from slurm.snapshot import code_snapshot, rescue_stranded
from slurm.status import run_state, slurm_queue

# Without Slurm accounting, submitit warns at every poll that sacct failed; squeue still
# reports the jobs' states, so the warning says nothing a user can act on.
logging.getLogger("submitit").addFilter(lambda r: "Bypassing sacct error" not in r.getMessage())


class TrainJob:
    """The submitit callable. Imports happen inside methods to keep the pickle light;
    a requeued job finds its progress in the checkpoint on disk, never in the pickle."""

    def __init__(self, cfg: dict, run_dir: str) -> None:
        if not Path(run_dir).is_absolute():  # the job may start in a snapshot or elsewhere
            raise ValueError(f"TrainJob needs an absolute run folder, got {run_dir}")
        self.cfg, self.run_dir = cfg, run_dir

    def __call__(self) -> float | None:
        from danet.engine.preemption import Preemption
        from danet.engine.train import run

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for DDP
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            self.preemption = Preemption()  # this process's run, for checkpoint() below
            cfg = C.from_dict(self.cfg, f"{self.run_dir}/config.yaml")
            result = run(cfg, Path(self.run_dir), preemption=self.preemption)
            if result is None:  # asked to stop (stop.json): checkpointed, the next sweep resumes
                return None
        except Exception as e:
            if env.global_rank == 0:
                atomic_write_json(
                    Path(self.run_dir) / F.ERROR,
                    {"message": one_line(e, limit=None), "job_id": env.job_id,
                     "time": time.time()},
                )
            raise
        return result["miou"]

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Slurm's USR2 (time limit near, or preemption): save the last finished iteration,
        then submitit requeues the job, which resumes from that checkpoint."""
        if getattr(self, "preemption", None) is not None:  # None: USR2 before training began
            self.preemption.save_now()
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir))


@dataclass
class Outcome:
    spec: RunSpec
    # done (before), finished, failed, submitted (--no-wait), stopped (asked to, checkpointed:
    # the next sweep resumes it), cancelled (danet cancel), killed, unstarted (danet.run_folder)
    state: State
    message: str = ""
    log: str = ""


@contextmanager
def sweep_lock(sweep_dir: Path, echo=print) -> Iterator[None]:
    """Held while a sweep decides and claims its runs (seconds), never while runs train."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / F.LAUNCH_LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            echo(f"another sweep is submitting runs of {sweep_dir}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def max_array_size(launcher: Launcher) -> int:
    """Runs per job array: launcher.max_array_size, else the cluster's MaxArraySize. Slurm
    numbers array tasks from 0 and refuses an index >= MaxArraySize, so an array holds at most
    MaxArraySize runs; a larger setting is refused here instead of failing at submission."""
    limit = None
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30
        ).stdout
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "MaxArraySize":
                limit = int(value)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    wanted = launcher.max_array_size
    if limit is None:  # Slurm's default MaxArraySize is 1001 (indices 0-1000)
        return wanted or 1000
    cap = max(limit, 1)  # 0 disables arrays: submitit submits a batch of one as a plain job
    if wanted > cap:
        raise DanetError(
            f"launcher.max_array_size={wanted} is above this cluster's MaxArraySize={limit} "
            f"(scontrol show config), which Slurm refuses; set launcher.max_array_size={cap} "
            "or less, or 0 to use the cluster's limit"
        )
    return wanted or cap


def make_executor(folder: Path, launcher: Launcher) -> submitit.Executor:
    # the local executor itself, not through AutoExecutor, which does not pass visible_gpus
    executor = (submitit.LocalExecutor(folder=folder) if launcher.cluster == "local" else
                submitit.AutoExecutor(folder=folder, cluster=launcher.cluster))
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


def _claim(spec: RunSpec, launcher: Launcher) -> None:
    """Mark a run as queued by this sweep process (job.json without a job id), so that another
    sweep leaves it alone until this process ends (slurm.status reads `queued_by`)."""
    record = {"cluster": launcher.cluster, "host": os.uname().nodename,
              "queued_by": os.getpid(), "submitted": time.time()}
    atomic_write_json(spec.run_dir / F.JOB, record)
    stopping.clear_stop(spec.run_dir)  # a stop asked of an earlier sweep does not hold now


def _record(
    spec: RunSpec, job: submitit.Job, launcher: Launcher, gpus: list[int] | None = None
) -> None:
    record = {
        "job_id": str(job.job_id),
        "queued_by": os.getpid(),  # the sweep: `danet cancel` stops a local one through it
        "cluster": launcher.cluster,
        "host": os.uname().nodename,
        "submitted": time.time(),
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
        **({"gpus": gpus} if gpus else {}),
    }
    atomic_write_json(spec.run_dir / F.JOB, record)


def launch(
    specs: list[RunSpec],
    sweep_dir: Path,
    launcher: Launcher,
    retry_failed: bool = False,
    wait: bool = True,
    echo=print,
    tick: Callable[[], None] = lambda: None,
) -> list[Outcome]:
    """Submit what is left to run of `specs`; with `wait`, follow them to their end, calling
    `tick` at each poll (slurm.live redraws its view there)."""
    sweep_dir = sweep_dir.absolute()
    outcomes: list[Outcome] = []
    todo: list[RunSpec] = []
    others: list[RunSpec] = []  # queued or running by another sweep or job
    # a size Slurm refuses stops the sweep here, before anything is written
    array_size = max_array_size(launcher) if launcher.cluster == "slurm" else 0
    with sweep_lock(sweep_dir, echo):
        rescue_stranded(sweep_dir, echo)
        queue = slurm_queue() if launcher.cluster == "slurm" else None
        for spec in specs:
            state = run_state(spec.run_dir, queue)
            if state.state == State.DONE:
                outcomes.append(Outcome(spec, State.DONE))
            elif state.state in F.ACTIVE:
                others.append(spec)
            elif state.state == State.FAILED and not retry_failed:
                outcomes.append(Outcome(spec, State.FAILED, state.message, state.log))
            else:
                todo.append(spec)
        done, failed = (sum(o.state == k for o in outcomes) for k in (State.DONE, State.FAILED))
        echo(
            f"{len(specs)} runs: {done} done, {len(todo)} to run"
            + (f", {len(others)} already queued or running" if others else "")
            + (f", {failed} failed (--retry-failed resubmits)" if failed else "")
            + (f" ({launcher.max_parallel} at once, " if launcher.cluster != "slurm" else " (")
            + f"{launcher.cluster} executor)"
        )
        for spec in todo:  # claimed before the lock is released: no other sweep takes them
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            _claim(spec, launcher)
        running = []
        if todo and launcher.cluster == "slurm":
            running = _submit_slurm(todo, sweep_dir, launcher, array_size, echo)
    if launcher.cluster != "slurm":  # local jobs end with this process: always waited for
        if todo:
            outcomes += _launch_local(todo, sweep_dir / F.SUBMITIT, launcher, echo, tick)
    elif not wait:
        submitted = [Outcome(spec, State.SUBMITTED, f"job {job.job_id}") for job, spec in running]
        return outcomes + submitted
    else:
        outcomes += _wait(running, 10.0, echo, slurm=True, tick=tick)
    return outcomes + _watch(others, launcher, echo, tick=tick)


def _submit_slurm(todo, sweep_dir, launcher, size: int, echo) -> list:
    """Submit job arrays (one per MaxArraySize runs); returns (job, spec) pairs."""
    entries = [e for s in todo for e in s.cfg.plugins]
    snapshot = code_snapshot(sweep_dir, entries) if launcher.snapshot else nullcontext()
    with snapshot:
        executor = make_executor(sweep_dir / F.SUBMITIT, launcher)
        executor.update_parameters(name=sweep_dir.name)
        running = []
        for first in range(0, len(todo), size):
            chunk = todo[first : first + size]
            with executor.batch():
                jobs = [executor.submit(TrainJob(C.to_dict(s.cfg), str(s.run_dir))) for s in chunk]
            for job, spec in zip(jobs, chunk):
                _record(spec, job, launcher)
                running.append((job, spec))
            echo(f"  submitted array {jobs[0].job_id.split('_')[0]}: {len(chunk)} runs")
    return running


def _launch_local(todo, folder, launcher, echo, tick) -> list[Outcome]:
    """Run the claimed runs, max_parallel at once. The first SIGINT/SIGTERM asks the running
    ones to stop at their next step (checkpointed) and starts no more; the second kills them."""
    stopping.jobs_in_own_sessions()
    executor = make_executor(folder, launcher)
    pool = local_gpus()
    held: dict[str, list[int]] = {}  # job id -> its GPUs
    running: list = []
    done: list[Outcome] = []
    queue = list(todo)
    poll = 0.5 if launcher.cluster == "debug" else 2.0
    handled = 0  # interrupts acted upon
    with stopping.Interrupts() as interrupts:
        while queue or running:
            if interrupts.count > handled:
                handled = interrupts.count
                done += _interrupt(handled, running, queue, echo)
            while queue and len(running) < launcher.max_parallel:
                in_use = {g for job, _ in running for g in held.get(job.job_id, [])}
                gpus = gpus_for(queue[0].cfg, launcher.tasks_per_node, pool, in_use)
                if gpus is None:  # waits for a running run to free its GPUs
                    break
                spec = queue.pop(0)
                resumed = " (resuming)" if (spec.run_dir / F.CHECKPOINTS).exists() else ""
                # submitit gives a local job exactly these GPUs (CUDA_VISIBLE_DEVICES; none: "")
                executor.update_parameters(name=spec.run_id)
                if launcher.cluster == "local":
                    executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=tuple(gpus))
                job = executor.submit(TrainJob(C.to_dict(spec.cfg), str(spec.run_dir)))
                _record(spec, job, launcher, gpus)
                on = f"  GPU {','.join(map(str, gpus))}" if gpus else ""
                echo(f"  start  {spec.run_id}{resumed}  job {job.job_id}{on}")
                held[job.job_id] = gpus
                running.append((job, spec))
            seen = handled
            done += _wait(running, poll, echo, until_one=True, tick=tick,
                          interrupted=lambda seen=seen: interrupts.count > seen)
    return done


def _interrupt(count: int, running: list, queue: list, echo) -> list[Outcome]:
    """The first interrupt: stop requests to the running runs, the queued ones unclaimed; the
    second (or two at once): the running jobs killed (their newest checkpoint stays; the next
    sweep resumes them)."""
    out = []
    for spec in queue:  # never started: unclaimed, as if this sweep had not chosen them
        (spec.run_dir / F.JOB).unlink(missing_ok=True)
        out.append(Outcome(spec, State.UNSTARTED))
    queue.clear()
    if count == 1:
        for _, spec in running:
            stopping.request_stop(spec.run_dir, "danet sweep (interrupted)")
        echo(f"stopping: {len(running)} running runs save a checkpoint at the end of their "
             "step and exit; interrupt again to kill them now")
        return out
    for job, spec in list(running):
        stopping.kill(job)
        running.remove((job, spec))
        echo(f"  killed {spec.run_id}  (its newest checkpoint stays)")
        out.append(Outcome(spec, State.KILLED, log=str(job.paths.stderr)))
    return out


def _watch(
    others: list[RunSpec], launcher: Launcher, echo, poll: float = 5.0,
    tick: Callable[[], None] = lambda: None,
) -> list[Outcome]:
    """Follow runs that another sweep (or an earlier `--no-wait`) queued, until each ends."""
    if not others:
        return []
    echo(f"  watching {len(others)} runs queued or running by another sweep or job")
    out: list[Outcome] = []
    pending = list(others)
    while pending:
        queue = slurm_queue() if launcher.cluster == "slurm" else None
        for spec in list(pending):
            state = run_state(spec.run_dir, queue)
            if state.state in F.ACTIVE:
                continue
            pending.remove(spec)
            if state.state == State.DONE:
                miou = f"mIoU {100 * state.miou:.2f}" if state.miou is not None else ""
                echo(f"  done   {spec.run_id}  {miou}  (by job {state.job_id})")
                out.append(Outcome(spec, State.FINISHED, log=state.log))
            else:
                message = state.message or "its job ended without a result; run the sweep again"
                echo(f"  FAILED {spec.run_id}: {message}")
                out.append(Outcome(spec, State.FAILED, message, state.log))
        if pending:
            tick()
            time.sleep(poll)
    return out


def _wait(
    running: list, poll: float, echo, until_one: bool = False, slurm: bool = False,
    interrupted: Callable[[], bool] = lambda: False, tick: Callable[[], None] = lambda: None,
) -> list[Outcome]:
    """Wait for the jobs (all of them, or the first to end, or until `interrupted()`);
    `running` is updated in place."""
    out: list[Outcome] = []
    while running and not interrupted():
        for job, spec in [r for r in running if r[0].done()]:
            running.remove((job, spec))
            out.append(_finish(job, spec, echo))
        queue = (
            slurm_queue() if running and running[0][0].__class__.__name__ == "SlurmJob" else None
        )
        for job, spec in list(running):
            # Without Slurm accounting submitit never learns of a job killed before it wrote
            # its result (scancel, node failure, time limit): the queue no longer holds it.
            state = run_state(spec.run_dir, queue).state if queue is not None else None
            if state in (State.STOPPED, State.CANCELLED) and not job.done():
                running.remove((job, spec))
                if state == State.CANCELLED:
                    echo(f"  cancelled {spec.run_id}  (danet cancel)")
                    out.append(Outcome(spec, State.CANCELLED, log=str(job.paths.stderr)))
                    continue
                message = "the job ended without a result (cancelled, killed or out of time)"
                echo(f"  FAILED {spec.run_id}: {message}  (log: {job.paths.stderr})")
                out.append(Outcome(spec, State.FAILED, message, str(job.paths.stderr)))
        if out and until_one:
            return out
        if running:
            deadline = time.monotonic() + poll
            while time.monotonic() < deadline and not interrupted():  # Ctrl-C acted on at once
                tick()  # the view redraws at most once a second
                time.sleep(0.1)
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
        return Outcome(spec, State.FAILED, message, log)
    if miou is None:  # asked to stop (stop.json): checkpointed at the end of a step
        state = run_state(spec.run_dir)
        how = State.CANCELLED if (spec.run_dir / F.CANCELLED).exists() else State.STOPPED
        echo(f"  {how} {spec.run_id}  at iteration {state.iteration}, checkpoint saved")
        return Outcome(spec, how, log=log)
    echo(f"  done   {spec.run_id}  mIoU {100 * miou:.2f}")
    return Outcome(spec, State.FINISHED, log=log)
