"""Launch a sweep's runs through submitit, at most `max_parallel` at once.

A run whose result.json exists is skipped; any other is (re)submitted and resumes from the
newest checkpoint in its folder. A failed run is reported and does not stop the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from danet import config as C
from slurm.grid import RunSpec


class TrainJob:
    """The submitit callable. Imports happen inside methods to keep the pickle light;
    a requeued job finds its progress in the checkpoint on disk, never in the pickle."""

    def __init__(self, cfg: dict, run_dir: str) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def __call__(self) -> float:
        from danet.engine.train import run

        result = run(C.from_dict(self.cfg, f"{self.run_dir}/config.yaml"), Path(self.run_dir))
        return result["miou"]

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir))


def is_done(spec: RunSpec) -> bool:
    return (spec.run_dir / "result.json").exists()


@dataclass
class Outcome:
    spec: RunSpec
    state: str  # done (before), finished, failed
    message: str = ""
    log: str = ""


def launch(
    specs: list[RunSpec],
    folder: Path,
    cluster: str,
    max_parallel: int,
    timeout_min: int,
    echo=print,
) -> list[Outcome]:
    todo = [s for s in specs if not is_done(s)]
    outcomes = [Outcome(s, "done") for s in specs if is_done(s)]
    echo(
        f"{len(specs)} runs: {len(outcomes)} done, {len(todo)} to run "
        f"({max_parallel} at once, {cluster} executor)"
    )
    if not todo:
        return outcomes
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(timeout_min=int(timeout_min))
    running: list[tuple[submitit.Job, RunSpec]] = []
    queue = list(todo)
    while queue or running:
        while queue and len(running) < max_parallel:
            spec = queue.pop(0)
            resumed = " (resuming)" if (spec.run_dir / "ckpt").exists() else ""
            executor.update_parameters(name=spec.run_id)
            job = executor.submit(TrainJob(C.to_dict(spec.cfg), str(spec.run_dir)))
            echo(f"  start  {spec.run_id}{resumed}  job {job.job_id}")
            running.append((job, spec))
        time.sleep(0.5 if cluster == "debug" else 2.0)
        for job, spec in [r for r in running if r[0].done()]:
            running.remove((job, spec))
            outcomes.append(_finish(job, spec, echo))
    return outcomes


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
        miou = job.result()
    except Exception as e:  # the job's own exception, re-raised by submitit with its traceback
        message = job_error(str(e)) or type(e).__name__
        echo(f"  FAILED {spec.run_id}: {message}  (log: {os.path.relpath(log) if log else '-'})")
        return Outcome(spec, "failed", message, log)
    echo(f"  done   {spec.run_id}  mIoU {100 * miou:.2f}")
    return Outcome(spec, "finished", log=log)
