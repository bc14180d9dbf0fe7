"""The run folder's one owner: the name of every file and subfolder, the one reader of each
file others read, and the states a run can be in. Training writes the folder
(danet.engine), the launcher submits, watches and cancels runs (slurm/), the analysis reads
their results (analysis/): all through the names here. Free of torch, so that `danet status`
and the tables start fast.

RUNS_ROOT/<sweep>/            a sweep's folder (the grid's name)
  <run_id>/                   a run's folder (danet.config.run_id)
    config.yaml               the resolved config; another config in the folder is refused
    log.jsonl                 one JSON object per line: train steps; resume, warning, stopped
                              and eval events (an iteration logged twice: the last counts)
    result.json               written last and atomically: its presence marks the run done
                              (schema 1, docs/result-schema.md)
    ckpt/                     checkpoints iter_NNNNNNN.pt, the newest two (danet.engine.checkpoint)
    tb/                       TensorBoard events (train.tensorboard)
    .train.lock               held by the process that trains the run
    job.json                  the job that runs it, written at submission (slurm.launch)
    error.json                the exception that ended its last job
    stop.json                 asks it to stop at its step's end, checkpointed (slurm.stopping)
    cancelled.json            written by `danet cancel`: a stopped run shows as cancelled
  .cost/                      cost measurements shared by the seeds of a variant
  .code/                      code snapshots of Slurm sweeps (slurm/snapshot.py)
  .submitit/                  submitit's job files and logs
  .launch.lock                held by the sweep that submits the runs
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"
LOG = "log.jsonl"
RESULT = "result.json"
CHECKPOINTS = "ckpt"
TENSORBOARD = "tb"
LOCK = ".train.lock"
JOB = "job.json"
ERROR = "error.json"
STOP = "stop.json"
CANCELLED = "cancelled.json"
RUN_FILES = (CONFIG, JOB)  # either marks a folder as a run's (job.json alone: not started yet)

COST_CACHE = ".cost"
CODE_SNAPSHOTS = ".code"
SUBMITIT = ".submitit"
LAUNCH_LOCK = ".launch.lock"


class State(enum.StrEnum):
    """What a run is doing, from its folder and the scheduler's queue (slurm.status.run_state);
    the last four are what a sweep reports of the runs it launched (slurm.launch.Outcome)."""

    NEW = "new"  # never submitted
    PENDING = "pending"  # queued, not trained yet (Slurm holds it, or a local job logged nothing)
    REQUEUED = "requeued"  # Slurm holds it and it has trained before: it resumes its checkpoint
    RUNNING = "running"  # training (Slurm: RUNNING or COMPLETING; local: a live job logs)
    STOPPED = "stopped"  # submitted once, no longer alive, not done: the next sweep resumes it
    CANCELLED = "cancelled"  # the same, after `danet cancel` (cancelled.json newer)
    FAILED = "failed"  # error.json is newer than the last submission (its message is shown)
    DONE = "done"  # result.json exists
    FINISHED = "finished"  # a sweep's outcome: done by one of its jobs
    KILLED = "killed"  # a sweep's outcome: its job was killed (a second Ctrl-C)
    UNSTARTED = "unstarted"  # a sweep's outcome: the sweep stopped before starting it
    SUBMITTED = "submitted"  # a sweep's outcome: submitted to Slurm, not waited for (--no-wait)


ACTIVE = frozenset({State.PENDING, State.RUNNING, State.REQUEUED})  # queued or training
HALTED = frozenset({State.STOPPED, State.CANCELLED, State.KILLED, State.UNSTARTED})  # resumable


def read_json(path: Path) -> Any:
    """A JSON file, or None while it is absent, torn or unreadable (a job may be writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_result(run_dir: Path) -> Any:
    """The run's result.json; raises OSError or ValueError (undecodable, not JSON), so that the
    analysis can say why it skips a file."""
    return json.loads((run_dir / RESULT).read_text())


def read_result(run_dir: Path) -> dict | None:
    """The run's result (a done run), or None."""
    result = read_json(run_dir / RESULT)
    return result if isinstance(result, dict) else None


def read_log(run_dir: Path) -> list[dict]:
    """log.jsonl's records in order; a torn line (being written) or a line that is not a JSON
    object is skipped. Readers keep an iteration's last line: a resumed run repeats some."""
    try:
        lines = (run_dir / LOG).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_config(run_dir: Path) -> dict:
    """The run's config.yaml as a mapping ({} while it is absent or unreadable); the config
    is checked where a run is trained or evaluated (danet.config), not here."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_folders(sweep_dir: Path) -> list[Path]:
    """The run folders of a sweep, sorted; job.json alone counts (a run submitted or claimed
    whose job has not written config.yaml yet)."""
    if not sweep_dir.is_dir():
        return []
    return sorted(p for p in sweep_dir.iterdir() if any((p / f).is_file() for f in RUN_FILES))
