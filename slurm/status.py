"""What state each run of a sweep is in, from its folder and the scheduler's queue.

done      result.json exists
failed    error.json is newer than the last submission (its message is shown)
pending   queued and has not trained yet: Slurm holds the job without running it (PENDING,
          held, CONFIGURING, ...), or a local job has logged no iteration yet
requeued  Slurm holds the job without running it and the run has trained before (preempted,
          `scontrol requeue`d, or resubmitted after a cancel): it resumes from its checkpoint
running   training: Slurm says RUNNING or COMPLETING (or a live local job has logged progress);
          the resumes column counts its restarts
stopped   submitted once, no longer alive, not done: the next sweep resubmits it
cancelled the same, after `danet cancel` (cancelled.json newer than the submission)
new       never submitted
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class RunState:
    state: str
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
        if pace is None or self.state == "done" or not self.iterations:
            return None
        return max(0, self.iterations - self.iteration) * pace


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("event") == "resume":
            out.resumes += 1
        out.iteration = max(out.iteration, int(record.get("iteration", 0)))
        if "loss" in record and "event" not in record:
            out.loss, out.train_s = float(record["loss"]), float(record.get("time", 0.0))
    return out


def _iterations(run_dir: Path) -> int:
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return int(cfg.get("train", {}).get("iterations", 0))
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return 0


def _short(path: str) -> str:
    """A path relative to here when it lies below, else as it is."""
    rel = os.path.relpath(path) if path else ""
    return path if rel.startswith("..") else rel


RUN_FILES = ("config.yaml", "job.json")
CANCELLED = "cancelled.json"  # written by `danet cancel` (slurm.stopping.cancel)


def duration(seconds: float | None) -> str:
    """1:05:09, 4:09 or 0:07; "" when unknown."""
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def run_folders(sweep_dir: Path) -> list[Path]:
    """The run folders of a sweep, sorted; job.json alone counts (a run submitted or claimed
    whose job has not written config.yaml yet)."""
    if not sweep_dir.is_dir():
        return []
    return sorted(p for p in sweep_dir.iterdir() if any((p / f).is_file() for f in RUN_FILES))


def sweep_states(
    sweep_dir: Path, expected: dict[str, int] | None = None
) -> list[tuple[str, RunState]]:
    """(run id, state) of each run of a sweep: those of `expected` (a grid's runs, id -> its
    iterations) first, in its order, with "new" for one never submitted, then any other run
    folder under sweep_dir (seeds added later, an older grid's runs)."""
    queue = slurm_queue()
    expected = expected or {}
    found = [p.name for p in run_folders(sweep_dir)]
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
            "ETA": duration(st.eta_s) if st.state in ("running", "pending", "requeued") else "",
            "resumes": st.resumes or "",
            "job": st.job_id,
            "log / error": (f"{st.message}  (log: {_short(st.log)})" if st.message and st.log
                            else st.message or _short(st.log)),  # fmt: skip
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
    ]  # fmt: skip


def counts(states: list[tuple[str, RunState]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, st in states:
        out[st.state] = out.get(st.state, 0) + 1
    return out


def run_state(run_dir: Path, queue: Queue | None = None) -> RunState:
    """The run's state; `queue` is slurm_queue() (asked here when None and needed)."""
    result = read_json(run_dir / "result.json")
    job = read_json(run_dir / "job.json") or {}
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
        return RunState("done", miou=result.get("miou"), **common)
    error = read_json(run_dir / "error.json")
    if error and error.get("time", 0) >= job.get("submitted", 0):
        return RunState("failed", message=str(error.get("message", "")), **common)
    if not job:
        return RunState("new", **common)
    if queue is None and job.get("cluster") == "slurm":
        queue = slurm_queue()
    alive = _alive(job, queue)
    if alive is False:
        cancelled = read_json(run_dir / CANCELLED)
        by_cancel = cancelled and cancelled.get("time", 0) >= job.get("submitted", 0)
        return RunState("cancelled" if by_cancel else "stopped", **common)
    if not job.get("job_id"):  # a claim: queued by a sweep, not yet submitted
        return RunState("pending", **common)
    slurm = queue.get(common["job_id"]) if queue and job.get("cluster") == "slurm" else None
    if slurm is None:  # a local job, or squeue unanswered: the log tells whether it trains
        return RunState("running" if iteration else "pending", **common)
    if slurm in RUNNING_STATES:
        return RunState("running", **common)
    return RunState("requeued" if iteration else "pending", **common)
