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


def _json(path: Path) -> dict | None:
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


def _progress(run_dir: Path) -> tuple[int, int]:
    """(last logged iteration, number of resumes) from log.jsonl."""
    last, resumes = 0, 0
    try:
        lines = (run_dir / "log.jsonl").read_text().splitlines()
    except OSError:
        return 0, 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("event") == "resume":
            resumes += 1
        last = max(last, int(record.get("iteration", 0)))
    return last, resumes


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


def status_table(sweep_dir: Path) -> tuple[list[dict], dict[str, int]]:
    """One row per run folder under sweep_dir, and the count of each state."""
    rows = []
    queue = slurm_queue()
    # job.json alone: a run submitted (or claimed) whose job has not written config.yaml yet
    runs = (p for p in sweep_dir.iterdir() if any((p / f).is_file() for f in RUN_FILES))
    for run_dir in sorted(runs):
        st = run_state(run_dir, queue)
        rows.append(
            {
                "run": run_dir.name,
                "state": st.state,
                "progress": f"{st.iteration}/{st.iterations}" if st.iterations else "-",
                "resumes": st.resumes,
                "mIoU": f"{100 * st.miou:.2f}" if st.miou is not None else "",
                "job": st.job_id,
                "log / error": st.message or _short(st.log),
            }
        )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return rows, counts


def run_state(run_dir: Path, queue: Queue | None = None) -> RunState:
    """The run's state; `queue` is slurm_queue() (asked here when None and needed)."""
    result = _json(run_dir / "result.json")
    job = _json(run_dir / "job.json") or {}
    iteration, resumes = _progress(run_dir)
    common = dict(
        job_id=str(job.get("job_id", "")),
        iteration=iteration,
        iterations=_iterations(run_dir),
        resumes=resumes,
        log=str(job.get("stderr", "")),
    )
    if result is not None:
        return RunState("done", miou=result.get("miou"), **common)
    error = _json(run_dir / "error.json")
    if error and error.get("time", 0) >= job.get("submitted", 0):
        return RunState("failed", message=str(error.get("message", "")), **common)
    if not job:
        return RunState("new", **common)
    if queue is None and job.get("cluster") == "slurm":
        queue = slurm_queue()
    alive = _alive(job, queue)
    if alive is False:
        return RunState("stopped", **common)
    if not job.get("job_id"):  # a claim: queued by a sweep, not yet submitted
        return RunState("pending", **common)
    slurm = queue.get(common["job_id"]) if queue and job.get("cluster") == "slurm" else None
    if slurm is None:  # a local job, or squeue unanswered: the log tells whether it trains
        return RunState("running" if iteration else "pending", **common)
    if slurm in RUNNING_STATES:
        return RunState("running", **common)
    return RunState("requeued" if iteration else "pending", **common)
