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
import gc
import logging
import os
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
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


class TrainJobs:
    """A local job of several runs (launcher.runs_per_job), trained one after another in one
    process, so that its start-up (imports: seconds on a CPU) is paid once, as Ray Tune's
    reuse_actors does. Each run is what a job of its own gives: run() seeds and sets up every
    run from its config alone. Returns one entry per run: {"miou": float or None (stopped,
    checkpointed)}, {"error": the exception's last traceback line}, or {"skipped": True}
    (asked to stop before it began: Ctrl-C, danet cancel)."""

    def __init__(self, runs: list[tuple[dict, str]]) -> None:
        self.jobs = [TrainJob(cfg, run_dir) for cfg, run_dir in runs]

    def __call__(self) -> list[dict]:
        out: list[dict] = []
        for job in self.jobs:
            if (Path(job.run_dir) / F.STOP).exists():
                out.append({"skipped": True})
                continue
            try:
                out.append({"miou": job()})
            except Exception as e:  # the next run goes on; error.json holds this one's message
                if submitit.JobEnvironment().num_tasks > 1:  # DDP: the job ends, as it must
                    raise
                out.append({"error": traceback.format_exception_only(e)[-1].strip()})
            gc.collect()  # the finished run's model and features, before the next one's
        return out

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """The time limit near: the running run checkpoints; the requeued job skips the finished
        runs (run() returns a done run's result) and resumes the rest."""
        for job in self.jobs:
            if getattr(job, "preemption", None) is not None:
                job.preemption.save_now()
        return submitit.helpers.DelayedSubmission(
            TrainJobs([(job.cfg, job.run_dir) for job in self.jobs])
        )


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
    # a size Slurm refuses stops the sweep here, before anything is written
    array_size = max_array_size(launcher) if launcher.cluster == "slurm" else 0
    with sweep_lock(sweep_dir, echo):
        rescue_stranded(sweep_dir, echo)
        queue = slurm_queue() if launcher.cluster == "slurm" else None
        outcomes, todo, others = _triage(specs, queue, retry_failed)
        echo(_plan_line(len(specs), outcomes, todo, others, launcher))
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
        outcomes += _wait(running, 10.0, echo, tick=tick)
    return outcomes + _watch(others, launcher, echo, tick=tick)


def _triage(specs: list[RunSpec], queue, retry_failed: bool
            ) -> tuple[list[Outcome], list[RunSpec], list[RunSpec]]:
    """(the outcomes of runs done or failed before, the runs to submit, the runs queued or
    running by another sweep or job)."""
    outcomes: list[Outcome] = []
    todo: list[RunSpec] = []
    others: list[RunSpec] = []
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
    return outcomes, todo, others


def _plan_line(total: int, outcomes: list[Outcome], todo: list, others: list,
               launcher: Launcher) -> str:
    """`25 runs: 0 done, 25 to run (2 at once, local executor)`."""
    done, failed = (sum(o.state == k for o in outcomes) for k in (State.DONE, State.FAILED))
    local = launcher.cluster != "slurm"
    return (
        f"{total} runs: {done} done, {len(todo)} to run"
        + (f", {len(others)} already queued or running" if others else "")
        + (f", {failed} failed (--retry-failed resubmits)" if failed else "")
        + (f" ({launcher.max_parallel} at once, " if local else " (")
        + (f"{launcher.runs_per_job} a job, " if local and launcher.runs_per_job > 1 else "")
        + f"{launcher.cluster} executor)"
    )


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


@dataclass
class LocalJob:
    """A local job and its runs (launcher.runs_per_job), trained in this order."""

    job: submitit.Job
    specs: list[RunSpec]
    gpus: list[int]
    told: set[str] = field(default_factory=set)  # run ids whose outcome has been reported

    def untold(self) -> list[RunSpec]:
        return [s for s in self.specs if s.run_id not in self.told]


def job_chunks(todo: list[RunSpec], size: int) -> list[list[RunSpec]]:
    """Consecutive runs in jobs of up to `size`; a job's runs share one device setting, so
    that the GPUs it is given fit each of them."""
    out: list[list[RunSpec]] = []
    for spec in todo:
        last = out[-1] if out else []
        if 0 < len(last) < size and last[0].cfg.train.device == spec.cfg.train.device:
            last.append(spec)
        else:
            out.append([spec])
    return out


def _launch_local(todo, folder, launcher, echo, tick) -> list[Outcome]:
    """Run the claimed runs, max_parallel jobs at once, each of up to launcher.runs_per_job
    runs. The first SIGINT/SIGTERM asks the running runs to stop at their next step
    (checkpointed) and starts no more; the second kills them."""
    stopping.jobs_in_own_sessions()
    executor = make_executor(folder, launcher)
    pool = local_gpus()
    running: list[LocalJob] = []
    done: list[Outcome] = []
    queue = job_chunks(todo, launcher.runs_per_job)
    handled = 0  # interrupts acted upon
    with stopping.Interrupts() as interrupts:
        while queue or running:
            if interrupts.count > handled:
                handled = interrupts.count
                done += _interrupt(handled, running, queue, echo)
            while queue and len(running) < launcher.max_parallel:
                in_use = {g for r in running for g in r.gpus}
                gpus = gpus_for(queue[0][0].cfg, launcher.tasks_per_node, pool, in_use)
                if gpus is None:  # waits for a running run to free its GPUs
                    break
                running.append(_submit_local(executor, queue.pop(0), launcher, gpus, echo))
            seen = handled
            done += _wait_local(running, echo, tick,
                                interrupted=lambda seen=seen: interrupts.count > seen)
    return done


def _submit_local(executor, specs: list[RunSpec], launcher, gpus: list[int], echo) -> LocalJob:
    # submitit gives a local job exactly these GPUs (CUDA_VISIBLE_DEVICES; none: "")
    executor.update_parameters(name=specs[0].run_id,
                               timeout_min=int(launcher.timeout_min) * len(specs))
    if launcher.cluster == "local":
        executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=tuple(gpus))
    job = executor.submit(TrainJobs([(C.to_dict(s.cfg), str(s.run_dir)) for s in specs]))
    on = f"  GPU {','.join(map(str, gpus))}" if gpus else ""
    for i, spec in enumerate(specs):
        _record(spec, job, launcher, gpus)
        resumed = " (resuming)" if (spec.run_dir / F.CHECKPOINTS).exists() else ""
        after = f"  (after {specs[i - 1].run_id})" if i else ""
        echo(f"  {'start' if not i else 'next '}  {spec.run_id}{resumed}  job {job.job_id}{on}"
             f"{after}")
    return LocalJob(job, specs, gpus)


def _unclaim(spec: RunSpec) -> Outcome:
    """A run this sweep chose but never started: left as if it had not been chosen (no claim,
    no stop request that the first Ctrl-C wrote while it waited in its job)."""
    (spec.run_dir / F.JOB).unlink(missing_ok=True)
    stopping.clear_stop(spec.run_dir)
    return Outcome(spec, State.UNSTARTED)


def _interrupt(count: int, running: list[LocalJob], queue: list, echo) -> list[Outcome]:
    """The first interrupt: stop requests to the running runs (and to the runs waiting in their
    jobs), the queued ones unclaimed; the second (or two at once): the running jobs killed
    (their newest checkpoints stay; the next sweep resumes them)."""
    out = [_unclaim(spec) for chunk in queue for spec in chunk]
    queue.clear()
    if count == 1:
        for r in running:
            for spec in r.untold():
                stopping.request_stop(spec.run_dir, "danet sweep (interrupted)")
        echo(f"stopping: {len(running)} running runs save a checkpoint at the end of their "
             "step and exit; interrupt again to kill them now")
        return out
    for r in list(running):
        stopping.kill(r.job)
        running.remove(r)
        out += _done_so_far(r, echo)
        for i, spec in enumerate(r.untold()):
            if i:
                out.append(_unclaim(spec))
                continue
            echo(f"  killed {spec.run_id}  (its newest checkpoint stays)")
            out.append(Outcome(spec, State.KILLED, log=str(r.job.paths.stderr)))
    return out


def _wait_local(running: list[LocalJob], echo, tick, interrupted: Callable[[], bool]
                ) -> list[Outcome]:
    """Until a job ends (or `interrupted()`), each run's outcome as soon as it is known: a job's
    earlier runs end before it. `running` is updated in place."""
    out: list[Outcome] = []
    while running and not interrupted():
        ended = [r for r in running if r.job.done()]
        for r in running:
            out += _done_so_far(r, echo)
        for r in ended:
            running.remove(r)
            out += _finish_local(r, echo)
        if ended:
            return out
        tick()  # the view redraws at most once a second
        time.sleep(0.1)
    return out


def _done_so_far(r: LocalJob, echo) -> list[Outcome]:
    """The job's runs that have written result.json since the last look, in order."""
    out = []
    for spec in r.untold():
        result = F.read_result(spec.run_dir) if (spec.run_dir / F.RESULT).exists() else None
        if result is None:
            break
        r.told.add(spec.run_id)
        out.append(_ended(spec, result.get("miou"), str(r.job.paths.stderr), echo))
    return out


def _finish_local(r: LocalJob, echo) -> list[Outcome]:
    """The outcome of each run of an ended job not yet reported."""
    log = str(r.job.paths.stderr) if hasattr(r.job, "paths") else ""
    try:
        entries = r.job.results()[0]
        crash = ""
    except Exception as e:  # the process died (killed, out of memory): submitit re-raises
        entries, crash = [], job_error(str(e)) or type(e).__name__
    by_id = dict(zip((s.run_id for s in r.specs), entries))
    out = []
    for i, spec in enumerate(r.untold()):
        entry = by_id.get(spec.run_id)
        if entry is None and i:  # the job died during an earlier run: this one never began
            out.append(_unclaim(spec))
        elif entry is None or "error" in entry:
            out.append(_failed(spec, crash if entry is None else entry["error"], log, echo))
        elif "skipped" in entry:
            out.append(_unclaim(spec))
        else:
            out.append(_ended(spec, entry["miou"], log, echo))
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
    running: list, poll: float, echo, tick: Callable[[], None] = lambda: None
) -> list[Outcome]:
    """Wait for the Slurm jobs to end; `running` is updated in place."""
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
        deadline = time.monotonic() + poll
        while running and time.monotonic() < deadline:
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
        return _failed(spec, job_error(str(e)) or type(e).__name__, log, echo)
    return _ended(spec, miou, log, echo)


def _failed(spec: RunSpec, message: str, log: str, echo) -> Outcome:
    echo(f"  FAILED {spec.run_id}: {message}  (log: {os.path.relpath(log) if log else '-'})")
    return Outcome(spec, State.FAILED, message, log)


def _ended(spec: RunSpec, miou: float | None, log: str, echo) -> Outcome:
    """A run that returned: its mIoU, or None when it was asked to stop (stop.json) and saved
    a checkpoint at the end of a step."""
    if miou is None:
        state = run_state(spec.run_dir)
        how = State.CANCELLED if (spec.run_dir / F.CANCELLED).exists() else State.STOPPED
        echo(f"  {how} {spec.run_id}  at iteration {state.iteration}, checkpoint saved")
        return Outcome(spec, how, log=log)
    echo(f"  done   {spec.run_id}  mIoU {100 * miou:.2f}")
    return Outcome(spec, State.FINISHED, log=log)
