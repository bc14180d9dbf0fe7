"""What state each run of a sweep is in (danet.run_folder.State, which says what each means),
from its folder and the scheduler's queue. Pending is a job Slurm holds without running it
(PENDING, held, CONFIGURING, ...) or a local job that has logged no iteration yet; requeued,
one Slurm holds that has trained before (preempted, `scontrol requeue`d, or resubmitted after
a cancel); the resumes column counts a run's restarts.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from danet import run_folder as F
from danet.run_folder import State


@dataclass
class RunState:
    state: State
    job_id: str = ""
    iteration: int = 0
    iterations: int = 0
    miou: float | None = None
    message: str = ""
    log: str = ""
    resumes: int = 0
    loss: float | None = None  # the last logged training loss
    train_s: float = 0.0  # training time so far (all sessions), or the finished run's

    @property
    def seconds_per_iteration(self) -> float | None:
        return self.train_s / self.iteration if self.iteration and self.train_s else None

    @property
    def eta_s(self) -> float | None:
        """Training time left at the run's own pace so far; None before it has one."""
        pace = self.seconds_per_iteration
        if pace is None or self.state == State.DONE or not self.iterations:
            return None
        return max(0, self.iterations - self.iteration) * pace


Queue = dict[str, str]  # job id (array tasks one by one) -> Slurm state, as squeue's %T

# Slurm states whose processes run (SIGNALING: a signal on its way to a running job; STAGE_OUT:
# its processes ended, files are being staged). Any other state in the queue (PENDING,
# REQUEUED, REQUEUE_HOLD, CONFIGURING, SUSPENDED, ...) is a job that waits.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})


def parse_squeue(text: str) -> Queue:
    """`squeue -h -r -o "%i %T"` output -> {job id: state}."""
    queue: Queue = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2:
            queue[fields[0]] = fields[1]
    return queue


def slurm_queue() -> Queue | None:
    """Every job Slurm holds (pending, running, requeued, held) with its state, array tasks one
    by one; None when squeue cannot be asked. One call serves a whole sweep."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_squeue(out.stdout) if out.returncode == 0 else None


def _alive(job: dict, queue: Queue | None) -> bool | None:
    """True when the scheduler still holds the job; None when this machine cannot tell."""
    job_id = str(job.get("job_id", ""))
    if not job_id and job.get("queued_by"):  # claimed by a sweep, not yet submitted
        job_id = str(job["queued_by"])
    elif job.get("cluster") == "slurm":
        return None if queue is None else job_id in queue
    if job.get("host") != os.uname().nodename or not job_id.isdigit():
        return None
    try:
        os.kill(int(job_id), 0)  # a local job's id is its process id
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Progress:
    iteration: int = 0  # the last logged
    resumes: int = 0
    loss: float | None = None
    train_s: float = 0.0  # the training clock at the last logged iteration


def read_progress(run_dir: Path) -> Progress:
    """What log.jsonl says of the run so far."""
    out = Progress()
    for record in F.read_log(run_dir):
        if record.get("event") == "resume":
            out.resumes += 1
        out.iteration = max(out.iteration, int(record.get("iteration", 0)))
        if "loss" in record and "event" not in record:
            out.loss, out.train_s = float(record["loss"]), float(record.get("time", 0.0))
    return out


def _iterations(run_dir: Path) -> int:
    try:
        return int(F.read_config(run_dir).get("train", {}).get("iterations", 0))
    except (ValueError, TypeError, AttributeError):  # a config.yaml edited by hand
        return 0


def _short(path: str) -> str:
    """A path relative to here when it lies below, else as it is."""
    rel = os.path.relpath(path) if path else ""
    return path if rel.startswith("..") else rel


def duration(seconds: float | None) -> str:
    """1:05:09, 4:09 or 0:07; "" when unknown."""
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def sweep_states(
    sweep_dir: Path, expected: dict[str, int] | None = None
) -> list[tuple[str, RunState]]:
    """(run id, state) of each run of a sweep: those of `expected` (a grid's runs, id -> its
    iterations) first, in its order, with "new" for one never submitted, then any other run
    folder under sweep_dir (seeds added later, an older grid's runs)."""
    queue = slurm_queue()
    expected = expected or {}
    found = [p.name for p in F.run_folders(sweep_dir)]
    out = []
    for run_id in [*expected, *(r for r in found if r not in expected)]:
        st = run_state(sweep_dir / run_id, queue)
        st.iterations = st.iterations or expected.get(run_id, 0)
        out.append((run_id, st))
    return out


def status_rows(states: list[tuple[str, RunState]]) -> list[dict]:
    """The table `danet status` prints: one row per run."""
    return [
        {
            "run": run_id,
            "state": st.state,
            "progress": f"{st.iteration}/{st.iterations}" if st.iterations else "-",
            "loss": f"{st.loss:.3f}" if st.loss is not None else "",
            "mIoU": f"{100 * st.miou:.2f}" if st.miou is not None else "",
            "time": duration(st.train_s or None),
            "ETA": duration(st.eta_s) if st.state in F.ACTIVE else "",
            "resumes": st.resumes or "",
            "job": st.job_id,
            "log / error": (f"{st.message}  (log: {_short(st.log)})" if st.message and st.log
                            else st.message or _short(st.log)),
        }
        for run_id, st in states
    ]


def status_json(states: list[tuple[str, RunState]]) -> list[dict]:
    """`danet status --json`: the same, unformatted (seconds, fractions, None when unknown)."""
    return [
        {"run": run_id, "state": st.state, "iteration": st.iteration,
         "iterations": st.iterations, "loss": st.loss, "miou": st.miou,
         "train_s": st.train_s or None, "eta_s": st.eta_s, "resumes": st.resumes,
         "job": st.job_id or None, "error": st.message or None, "log": st.log or None}
        for run_id, st in states
    ]


def counts(states: list[tuple[str, RunState]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, st in states:
        out[st.state] = out.get(st.state, 0) + 1
    return out


def run_state(run_dir: Path, queue: Queue | None = None) -> RunState:
    """The run's state; `queue` is slurm_queue() (asked here when None and needed)."""
    result = F.read_result(run_dir)
    job = F.read_json(run_dir / F.JOB) or {}
    progress = read_progress(run_dir)
    iteration = progress.iteration
    common = dict(
        job_id=str(job.get("job_id", "")),
        iteration=iteration,
        iterations=_iterations(run_dir),
        resumes=progress.resumes,
        log=str(job.get("stderr", "")),
        loss=progress.loss,
        train_s=progress.train_s,
    )
    if result is not None:
        common["train_s"] = float(result.get("train_time_s") or progress.train_s)
        return RunState(State.DONE, miou=result.get("miou"), **common)
    error = F.read_json(run_dir / F.ERROR)
    if error and error.get("time", 0) >= job.get("submitted", 0):
        return RunState(State.FAILED, message=str(error.get("message", "")), **common)
    if not job:
        return RunState(State.NEW, **common)
    return RunState(_queued_state(run_dir, job, queue, iteration), **common)


def _queued_state(run_dir: Path, job: dict, queue: Queue | None, iteration: int) -> State:
    """The state of a submitted run that is neither done nor failed."""
    if queue is None and job.get("cluster") == "slurm":
        queue = slurm_queue()
    alive = _alive(job, queue)
    if alive is False:
        cancelled = F.read_json(run_dir / F.CANCELLED)
        by_cancel = cancelled and cancelled.get("time", 0) >= job.get("submitted", 0)
        return State.CANCELLED if by_cancel else State.STOPPED
    if not job.get("job_id"):  # a claim: queued by a sweep, not yet submitted
        return State.PENDING
    job_id = str(job["job_id"])
    slurm = queue.get(job_id) if queue and job.get("cluster") == "slurm" else None
    if slurm is None:  # a local job, or squeue unanswered: the log tells whether it trains
        return State.RUNNING if iteration else State.PENDING
    if slurm in RUNNING_STATES:
        return State.RUNNING
    return State.REQUEUED if iteration else State.PENDING
