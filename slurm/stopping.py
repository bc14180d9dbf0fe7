"""Stopping a sweep cleanly, and `danet cancel`. A run is asked to stop by its
RUN_DIR/stop.json: its training loop stops at the end of the running step, saves a
checkpoint and exits (result None), and the next sweep resumes it
(danet.engine.train.stop_requested).

A local sweep turns SIGINT (Ctrl-C) and SIGTERM into such requests for its running runs and
starts no more; a second signal kills them. Its jobs run in sessions of their own, so a
Ctrl-C in the terminal reaches the sweep alone: submitit's local controller, in the
terminal's process group, would otherwise get it too and kill its run mid-step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import submitit
import submitit.local.local

from danet import run_folder as F
from danet.utils import atomic_write_json


class _NewSession:
    """`subprocess` as submitit's local executor uses it, with every job started in a session
    (and process group) of its own. submitit has no option for it, hence this shim."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs) -> subprocess.Popen:  # noqa: N802  (subprocess's name)
        return subprocess.Popen(*args, **{**kwargs, "start_new_session": True})


def jobs_in_own_sessions() -> None:
    """Make submitit's local executor start each job in a new session (idempotent)."""
    submitit.local.local.subprocess = _NewSession()  # type: ignore[assignment]


def request_stop(run_dir: Path, by: str) -> None:
    atomic_write_json(run_dir / F.STOP, {"by": by, "pid": os.getpid(), "time": time.time()})


def clear_stop(run_dir: Path) -> None:
    (run_dir / F.STOP).unlink(missing_ok=True)


def kill(job: submitit.Job) -> None:
    """SIGKILL a local job's whole process group (its controller and its tasks); reaped."""
    process = getattr(job, "_process", None)
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):  # ended meanwhile
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Interrupts:
    """While active, SIGINT and SIGTERM are counted instead of raising KeyboardInterrupt (or
    ending the process); only in the main thread, where Python delivers signals."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


@dataclass
class Cancelled:
    count: int = 0  # runs cancelled
    jobs: list[str] = field(default_factory=list)  # Slurm job ids scancel'ed
    sweeps: set[int] = field(default_factory=set)  # local sweeps (process ids) sent SIGTERM
    elsewhere: set[str] = field(default_factory=set)  # hosts of local sweeps not signalled


def cancel(run_dirs: list[Path]) -> Cancelled:
    """`danet cancel`: every queued or running run among `run_dirs` is asked to stop
    (stop.json: a running one stops at its step's end, checkpointed) and marked cancelled
    (cancelled.json); Slurm jobs are then scancel'ed (their SIGTERM is ignored, so a running
    run has Slurm's KillWait to reach its step's end) and a local sweep on this machine gets
    SIGTERM, which stops its runs the same way and starts no more. A local sweep on another
    machine (a shared file system) is not signalled: its process id means nothing here."""
    from slurm.status import run_state, slurm_queue

    queue = slurm_queue()
    out = Cancelled()
    for run_dir in run_dirs:
        if run_state(run_dir, queue).state not in F.ACTIVE:
            continue
        job = F.read_json(run_dir / F.JOB) or {}
        request_stop(run_dir, "danet cancel")
        atomic_write_json(run_dir / F.CANCELLED, {"time": time.time(), "job_id": job.get("job_id")})
        out.count += 1
        if job.get("cluster") == "slurm" and job.get("job_id"):
            out.jobs.append(str(job["job_id"]))
        elif job.get("queued_by") and job.get("host") == os.uname().nodename:
            out.sweeps.add(int(job["queued_by"]))
        elif job.get("queued_by"):
            out.elsewhere.add(str(job.get("host")))
    if out.jobs:
        subprocess.run(["scancel", *out.jobs], check=True, capture_output=True, timeout=60)
    for pid in out.sweeps:
        with contextlib.suppress(ProcessLookupError):  # the sweep ended meanwhile
            os.kill(pid, signal.SIGTERM)
    return out
