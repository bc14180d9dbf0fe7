"""Launch a sweep's runs through submitit: on this machine, or as Slurm job arrays.

A run whose result.json exists is done and skipped; one whose job is still queued or running
(by this sweep or another) is watched until it ends; a failed one is resubmitted only with
retry_failed; any other is submitted and resumes from the newest checkpoint in its folder.
The decisions of one sweep folder happen under a file lock, and every run chosen is claimed
(its job.json written) before the lock is released, so two sweeps started at once never train
a run twice. Every path handed to a job is absolute: a Slurm job starts in a code snapshot.

`seeds_until` (`danet sweep --seeds-until W`) then adds seeds to the grid's cells, through
`launch`, until every variant's interval of its gain over the baseline is at most ±W wide.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import submitit

from danet import config as C
from danet.errors import DanetError
from danet.utils import atomic_write_json
from slurm.grid import Launcher, RunSpec, with_seed
from slurm.snapshot import code_snapshot, rescue_stranded
from slurm.status import run_state, slurm_queue

if TYPE_CHECKING:  # pandas only for --seeds-until: the jobs that unpickle TrainJob skip it
    import pandas as pd

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

    def __call__(self) -> float:
        from danet.engine.preemption import Preemption
        from danet.engine.train import run

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for DDP
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            self.preemption = Preemption()  # this process's run, for checkpoint() below
            cfg = C.from_dict(self.cfg, f"{self.run_dir}/config.yaml")
            result = run(cfg, Path(self.run_dir), preemption=self.preemption)
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
        if getattr(self, "preemption", None) is not None:  # None: USR2 before training began
            self.preemption.save_now()
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir))


@dataclass
class Outcome:
    spec: RunSpec
    state: str  # done (before), active (queued or running elsewhere), finished, failed, submitted
    message: str = ""
    log: str = ""


@contextmanager
def sweep_lock(sweep_dir: Path, echo=print) -> Iterator[None]:
    """Held while a sweep decides and claims its runs (seconds), never while runs train."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".launch.lock", "w") as f:
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


def _claim(spec: RunSpec, launcher: Launcher) -> None:
    """Mark a run as queued by this sweep process (job.json without a job id), so that another
    sweep leaves it alone until this process ends (slurm.status reads `queued_by`)."""
    record = {"cluster": launcher.cluster, "host": os.uname().nodename,
              "queued_by": os.getpid(), "submitted": time.time()}  # fmt: skip
    atomic_write_json(spec.run_dir / "job.json", record)


def _record(spec: RunSpec, job: submitit.Job, launcher: Launcher) -> None:
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
            if state.state == "done":
                outcomes.append(Outcome(spec, "done"))
            elif state.state in ("pending", "running", "requeued"):
                others.append(spec)
            elif state.state == "failed" and not retry_failed:
                outcomes.append(Outcome(spec, "failed", state.message, state.log))
            else:
                todo.append(spec)
        done, failed = (sum(o.state == k for o in outcomes) for k in ("done", "failed"))
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
        outcomes += _launch_local(todo, sweep_dir / ".submitit", launcher, echo) if todo else []
    elif not wait:
        return outcomes + [Outcome(spec, "submitted", f"job {job.job_id}") for job, spec in running]
    else:
        outcomes += _wait(running, 10.0, echo, slurm=True)
    return outcomes + _watch(others, launcher, echo)


def _submit_slurm(todo, sweep_dir, launcher, size: int, echo) -> list:
    """Submit job arrays (one per MaxArraySize runs); returns (job, spec) pairs."""
    snapshot = code_snapshot(sweep_dir) if launcher.snapshot else nullcontext()
    with snapshot:
        executor = make_executor(sweep_dir / ".submitit", launcher)
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


def _watch(others: list[RunSpec], launcher: Launcher, echo, poll: float = 5.0) -> list[Outcome]:
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
            if state.state in ("pending", "running", "requeued"):
                continue
            pending.remove(spec)
            if state.state == "done":
                miou = f"mIoU {100 * state.miou:.2f}" if state.miou is not None else ""
                echo(f"  done   {spec.run_id}  {miou}  (by job {state.job_id})")
                out.append(Outcome(spec, "finished", log=state.log))
            else:
                message = state.message or "its job ended without a result; run the sweep again"
                echo(f"  FAILED {spec.run_id}: {message}")
                out.append(Outcome(spec, "failed", message, state.log))
        if pending:
            time.sleep(poll)
    return out


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


# --- danet sweep --seeds-until: add seeds until every Δ interval is narrow enough -----------


MAX_SEEDS = 10  # --max-seeds' default


def check_seeds_until(
    width: float | None, max_seeds: int | None, no_wait: bool, specs: list[RunSpec]
) -> int:
    """Checks --seeds-until W and --max-seeds M before anything runs, and returns M (its
    default when not given): W > 0 points, M >= 2 (an interval needs two seeds), the grid
    has baseline runs, and the sweep waits (the loop reads finished runs)."""
    from analysis.stats import BASELINE

    if width is None:
        if max_seeds is not None:
            raise DanetError("--max-seeds only applies with --seeds-until W")
        return MAX_SEEDS
    if not (width > 0 and math.isfinite(width)):
        raise DanetError(f"--seeds-until must be a half-width above 0 (mIoU points), got {width}")
    max_seeds = MAX_SEEDS if max_seeds is None else max_seeds
    if max_seeds < 2:
        raise DanetError(f"--max-seeds must be 2 or more (an interval needs two), got {max_seeds}")
    if no_wait:
        raise DanetError("--seeds-until waits for the runs to decide on more; drop --no-wait")
    if not any(s.cfg.model.variant == BASELINE for s in specs):
        raise DanetError(
            f"--seeds-until narrows the interval of each variant's gain over '{BASELINE}', "
            f"and the grid has no run of '{BASELINE}'"
        )
    return max_seeds


def cell_key(spec: RunSpec) -> str:
    """A grid cell: the resolved config without its seed."""
    d = C.to_dict(spec.cfg)
    d.pop("seed")
    return json.dumps(d, sort_keys=True)


def seeds_needed(
    summary: pd.DataFrame, width: float, max_seeds: int, baseline: str
) -> pd.DataFrame:
    """The rows of `analysis.stats.summarize` whose variant needs another seed: a Δ interval
    wider than ±width (or none yet) and fewer than max_seeds seeds. Only the width counts, never
    whether the interval excludes zero: a rule that stops once a result looks significant
    would make it look significant more often than the level says. Rows without a baseline
    in their group are left out: no number of seeds gives them an interval."""
    rows = summary[(summary["variant"] != baseline) & (summary["ci_method"] != "no baseline")]
    n = rows["seeds"].map(lambda s: len(str(s).split(",")))
    wide = rows["ci_halfwidth"].isna() | (rows["ci_halfwidth"] > width)
    return rows[wide & (n < max_seeds)]


def next_seed(used: set[int]) -> int:
    """The smallest seed (0, 1, ...) not in used."""
    return next(s for s in itertools.count() if s not in used)


def _state(
    sweep_dir: Path, cells: dict[str, RunSpec], baseline: str, echo
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, summary, group keys): the finished runs of these grid cells under sweep_dir, mIoU
    in percent, with their cell (other runs there, e.g. of an older version of the grid, are
    left out), and their `analysis.stats.summarize`."""
    import pandas as pd

    from analysis.collect import collect
    from analysis.stats import group_keys, summarize

    df, problems = collect(sweep_dir)
    for p in problems:
        echo(f"warning: {p}")
    if df.empty:
        return df, pd.DataFrame(), []
    owner = {
        with_seed(spec, int(seed)).run_id: cell
        for cell, spec in cells.items()
        for seed in df["seed"].unique()
    }
    df = df[df["run_id"].isin(owner)].copy()
    df["cell"] = df["run_id"].map(owner)
    df["miou"] = 100 * df["miou"]
    keys = group_keys(df)
    df[keys] = df[keys].astype(str)  # a missing value is a group like any other, and matches
    return df, summarize(df, "miou", keys, baseline), keys


def _label(row: pd.Series, varying: list[str]) -> str:
    where = f" [{', '.join(str(row[k]) for k in varying)}]" if varying else ""
    return f"{row['variant']}{where}"


def added_runs(
    need: pd.DataFrame, df: pd.DataFrame, cells: dict[str, RunSpec], keys: list[str], baseline: str
) -> list[RunSpec]:
    """For each row of need, the next unused seed of that variant in that group, in every cell
    of the variant and in every baseline cell of the group that lacks it (so pairs stay real)."""
    new: dict[str, RunSpec] = {}
    for _, row in need.iterrows():
        group = df[(df[keys] == row[keys]).all(axis=1)] if keys else df
        mine = group[group["variant"] == row["variant"]]
        seed = next_seed({int(s) for s in mine["seed"]})
        for cell, runs in group[group["variant"].isin([row["variant"], baseline])].groupby("cell"):
            if seed not in set(runs["seed"].astype(int)):
                spec = with_seed(cells[cell], seed)
                new[spec.run_id] = spec
    return list(new.values())


def _widths(
    summary: pd.DataFrame, width: float, max_seeds: int, baseline: str, varying: list[str]
) -> str:
    """'pam: half-width 7.31 > 2.0, n=3; cam: no interval yet, n=1' for the variants of summary
    (with the values of the group columns in `varying`, those that differ between groups)."""
    parts = []
    for _, row in summary[summary["variant"] != baseline].iterrows():
        n = len(str(row["seeds"]).split(","))
        half = float(row["ci_halfwidth"])
        if math.isnan(half):
            text = "no interval yet"
        else:
            text = f"half-width {half:.2f} {'>' if half > width else '<='} {width}"
        capped = ", --max-seeds reached" if n >= max_seeds and not half <= width else ""
        parts.append(f"{_label(row, varying)}: {text}, n={n}{capped}")
    return "; ".join(parts)


def seeds_until(
    specs: list[RunSpec],
    sweep_dir: Path,
    launcher: Launcher,
    width: float,
    max_seeds: int,
    retry_failed: bool = False,
    echo=print,
) -> list[Outcome]:
    """After the grid's own runs: while some variant's Δ mIoU interval vs the baseline is wider
    than ±width points (or missing) and it has fewer than max_seeds seeds, add its next unused
    seed (and the baseline's run of that seed), launch them with `launch`, and look again.
    Returns the outcomes of the added runs; a failed one ends the loop."""
    from analysis.stats import BASELINE

    cells = {cell_key(s): s for s in specs}
    outcomes: list[Outcome] = []
    # each round adds a seed to every variant it names, so max_seeds rounds always suffice
    # (the bound only matters if finished runs cannot be read back)
    round_ = 0
    while True:
        round_ += 1
        df, summary, keys = _state(sweep_dir, cells, BASELINE, echo)
        if summary.empty:
            echo(f"seeds-until {width}: no finished runs of this grid under {sweep_dir}")
            return outcomes
        varying = [k for k in keys if summary[k].nunique() > 1]
        need = seeds_needed(summary, width, max_seeds, BASELINE)
        if need.empty or round_ > max_seeds:
            status = _widths(summary, width, max_seeds, BASELINE, varying)
            rounds = f"{round_ - 1} round{'' if round_ == 2 else 's'}"
            echo(f"seeds-until {width}: done after {rounds} ({status})")
            return outcomes
        new = added_runs(need, df, cells, keys, BASELINE)
        status = _widths(need, width, max_seeds, BASELINE, varying)
        echo(f"seeds-until {width}: round {round_} adds {len(new)} runs ({status})")
        outcomes += launch(new, sweep_dir, launcher, retry_failed, True, echo)
        if any(o.state == "failed" for o in outcomes):
            return outcomes
