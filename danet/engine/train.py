"""The one training loop shared by every variant: `run(cfg, run_dir)`. It writes the run
folder (danet.run_folder): config.yaml, log.jsonl, TensorBoard events, checkpoints every
train.checkpoint_every iterations, and result.json last, which marks the run done.

Read top to bottom: `run` (skip a finished run, lock the folder), `setup` (data, model,
optimiser), `restore` (the newest checkpoint), `train` (the loop), `finish` (evaluate and
write result.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from danet import RESULT_SCHEMA, plugins
from danet import config as C
from danet import run_folder as F
from danet.checks import check_config
from danet.data import build_dataset, feature_cache
from danet.data.feature_cache import Entry
from danet.data.frozen import FrozenTrainSet, evaluate_cached
from danet.data.sampler import seed_from
from danet.engine import checkpoint, cost, distributed, run_lock, speed, step
from danet.engine.evaluate import evaluate, metrics_dict
from danet.engine.preemption import Preemption
from danet.engine.sinks import Sinks
from danet.errors import DanetError
from danet.models import Segmentor, head
from danet.models.segmentor import HeadOnFeatures
from danet.utils import (
    atomic_write_json,
    device_name,
    git_state,
    seed_everything,
    sha256_file,
    versions,
)


@dataclass
class Run:
    """What one run trains and evaluates, built by `setup`."""

    cfg: C.Config
    run_dir: Path
    info: distributed.DistInfo
    device: torch.device
    train_set: Dataset
    val_set: Dataset
    model: Segmentor
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    val_features: Entry | None = None  # model.freeze_backbone: the cached validation features

    @property
    def main(self) -> bool:
        return self.info.is_main


def run(
    cfg: C.Config,
    run_dir: Path,
    stop_after: int | None = None,
    progress: bool = True,
    preemption: Preemption | None = None,
) -> dict | None:
    """Train and evaluate one run; resume from its newest checkpoint; skip it when done.

    Several processes (RANK/WORLD_SIZE in the environment, danet.engine.distributed) train
    it together; rank 0 alone writes. `stop_after` ends training after that iteration
    (after its checkpoint), as an interruption would; the result is then None. `preemption`
    lets the caller (a Slurm job) save the run on demand.
    """
    check_config(cfg)
    run_dir = Path(run_dir)
    if (run_dir / F.RESULT).exists():
        C.write_or_check(run_dir / F.CONFIG, cfg)  # another config is refused
        return F.load_result(run_dir)
    device_type = step.pick_device(cfg.train.device).type
    speed.check(cfg.train, device_type)
    info = distributed.setup(device_type == "cuda")
    preemption = preemption or Preemption()
    try:
        with run_lock.exclusive(run_dir) if info.is_main else contextlib.nullcontext():
            if (run_dir / F.RESULT).exists():  # finished while this process waited
                return F.load_result(run_dir)
            with preemption.installed():
                return _train_and_finish(setup(cfg, run_dir, info), stop_after, progress,
                                         preemption)
    finally:
        distributed.teardown(info)


def _train_and_finish(
    r: Run, stop_after: int | None, progress: bool, preemption: Preemption
) -> dict | None:
    skipped: list[tuple[Path, str]] = []
    state = checkpoint.latest(r.run_dir, on_skip=lambda path, why: skipped.append((path, why)))
    start = state["iteration"] if state else 0
    total = r.cfg.train.iterations
    with Sinks(r.run_dir, start, total, r.main, r.cfg.train.tensorboard, progress) as sinks:
        # A restart from 0 keeps log.jsonl (nothing written is deleted): its lines past
        # iteration 0 repeat later, readers keep an iteration's last line, and this warning
        # marks the restart.
        for message in checkpoint.skip_warnings(skipped, state):
            sinks.warn(message)
        elapsed = restore(r, state, sinks)
        train_time = train(r, start, elapsed, stop_after, sinks, preemption)
        return None if train_time is None else finish(r, train_time, sinks)


def setup(cfg: C.Config, run_dir: Path, info: distributed.DistInfo) -> Run:
    """The run folder's config, then data, model, optimiser: every process the same weights."""
    world = info.world_size
    if cfg.train.batch_size % world:
        raise DanetError(
            f"'train.batch_size' ({cfg.train.batch_size}) is the total over {world} processes "
            "and must divide evenly among them"
        )
    if info.is_main:
        C.write_or_check(run_dir / F.CONFIG, cfg)
        checkpoint.remove_partial(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = step.pick_device(cfg.train.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", info.local_rank)
    speed.set_backends(cfg.train, device)
    seed_everything(cfg.seed)  # the same initial weights in every process
    train_set = build_dataset(cfg.data, "train", cfg.seed)
    val_set = build_dataset(cfg.data, "val", cfg.seed)  # now: a bad file fails before training
    model, optimizer, scaler = step.build_model(cfg, len(train_set.classes), device, world)
    val_features = None
    if cfg.model.freeze_backbone:
        train_set, val_features = frozen_features(cfg, model, train_set, val_set)
    return Run(cfg, run_dir, info, device, train_set, val_set, model, optimizer, scaler,
               val_features)


def frozen_features(
    cfg: C.Config, model: Segmentor, train_set: Dataset, val_set: Dataset
) -> tuple[FrozenTrainSet, Entry]:
    """The frozen-feature protocol's training set (crops of cached features) and cached
    validation features, built once per machine (danet.data.feature_cache)."""
    plain = build_dataset(cfg.data, "train", cfg.seed, transform="eval")
    roles = ("train", "train-mirror", "val") if cfg.data.flip else ("train", "val")
    sources = {"train": plain, "train-mirror": plain, "val": val_set}
    found = feature_cache.entries(model.backbone, cfg, roles, sources, train_set.ignore_index)
    mirror = found.get("train-mirror")
    return FrozenTrainSet(found["train"], mirror, cfg.data.crop_size, cfg.seed, train_set), found[
        "val"
    ]


def restore(r: Run, state: dict | None, sinks: Sinks) -> float:
    """Load a checkpoint's weights, optimiser and random state; returns its training time."""
    if state is None:
        return 0.0
    r.model.load_state_dict(state["model"])
    r.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        r.scaler.load_state_dict(state["scaler"])
    if r.info.world_size == 1:  # several processes reseed every iteration instead (train)
        torch.set_rng_state(state["rng_cpu"])
        if r.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], r.device)
    sinks.event(event="resume", iteration=state["iteration"])
    return state["elapsed"]


def save(r: Run, done: int, elapsed: float) -> None:
    if not r.main:
        return
    cuda = r.device.type == "cuda"
    checkpoint.save(r.run_dir, done, {
        "model": r.model.state_dict(),
        "optimizer": r.optimizer.state_dict(),
        "scaler": r.scaler.state_dict() if r.scaler.is_enabled() else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(r.device) if cuda else None,
        "iteration": done,
        "elapsed": elapsed,
    })


def train(
    r: Run, start: int, elapsed: float, stop_after: int | None, sinks: Sinks,
    preemption: Preemption,
) -> float | None:
    """Iterations start..total; returns the training time, or None when stopped early."""
    cfg, info, total = r.cfg, r.info, r.cfg.train.iterations
    net = HeadOnFeatures(r.model.head) if cfg.model.freeze_backbone else r.model
    if info.world_size > 1:
        ids = [r.device.index] if r.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(r.model, device_ids=ids)
    net = speed.compiled(net, cfg.train)
    batches = iter(step.train_loader(r.train_set, cfg, start, info, r.device))
    r.model.train()
    t0 = time.perf_counter()
    clock = lambda: elapsed + time.perf_counter() - t0  # noqa: E731  (training time so far)
    done, stop = start, False
    preemption.save = lambda: save(r, done, clock())  # the last finished iteration
    for it in range(start, total):
        with preemption.step():
            if info.world_size > 1:  # dropout from (seed, rank, iteration): resumes repeat it
                torch.manual_seed(seed_from(cfg.seed, info.rank, it))
            lr = step.poly_lr(r.optimizer, it, total, cfg.train.poly_power)
            loss, parts = step.train_step(net, r.optimizer, r.scaler, next(batches), cfg,
                                          r.train_set.ignore_index, info, r.device, it)
            done = it + 1
            if done % cfg.train.log_every == 0 or done == total:
                shown = float(distributed.all_sum(loss.detach().clone(), info)) / info.world_size
                sinks.train(done, shown, parts, lr, clock(), cfg.train.batch_size, r.device)
            sinks.bar.update()
            if cfg.eval.every and done % cfg.eval.every == 0 and done < total:
                validate(r, done, sinks)  # before the checkpoint: a resumed run has it
            stop = done < total and stop_requested(r, done)
            if done % cfg.train.checkpoint_every == 0 or done in (total, stop_after) or stop:
                save(r, done, clock())
        if stop:
            sinks.event(event="stopped", iteration=done)
            return None
        if done == stop_after and done < total:
            return None
    preemption.save = None
    return clock()


def stop_requested(r: Run, done: int) -> bool:
    """Whether the run was asked to stop (RUN_DIR/stop.json): it stops at this step's end,
    checkpointed, to be resumed by the next sweep. Several processes decide together at the
    logging steps (all must stop at one iteration); one process looks at every step."""
    world = r.info.world_size
    if world > 1 and done % r.cfg.train.log_every:
        return False
    asked = (r.run_dir / F.STOP).exists() if r.main else False
    if world > 1:
        flag = torch.tensor([float(asked)], device=r.device)
        asked = bool(distributed.all_sum(flag, r.info).item())
    return asked


def evaluate_split(r: Run, modes: tuple[str, ...]) -> dict[str, dict]:
    """Metrics of the validation split in each mode (images split over the processes,
    counts summed)."""
    shard, world = r.val_set, r.info.world_size
    if world > 1:  # each process scores every world-th image
        shard = Subset(r.val_set, range(r.info.rank, len(r.val_set), world))
        shard.same_size = getattr(r.val_set, "same_size", False)
    cfg, classes = r.cfg, r.train_set.classes
    cached = r.val_features is not None and "whole" in modes  # frozen: cached features
    rest = tuple(m for m in modes if not (cached and m == "whole"))
    cms = {}
    if cached:
        mine = range(r.info.rank, len(r.val_features), world)
        cms["whole"] = evaluate_cached(r.model, r.val_features, len(classes),
                                       r.train_set.ignore_index, r.device, mine)
    if rest:
        cms.update(evaluate(
            r.model, shard, len(classes), r.device, dataclasses.replace(cfg.eval, modes=rest),
            cfg.data.crop_size, r.train_set.ignore_index, num_workers=cfg.data.num_workers,
            amp=cfg.train.amp,
        ))
    for cm in cms.values():
        distributed.all_sum(cm.mat, r.info)
    return {mode: metrics_dict(cms[mode], classes) for mode in modes}


def validate(r: Run, iteration: int, sinks: Sinks) -> None:
    """Periodic validation (eval.every) in the first eval mode, logged. The random state is
    put back afterwards, so training goes on exactly as it would without it."""
    cuda = [r.device] if r.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type=r.device.type):
        sinks.evaluated(evaluate_split(r, r.cfg.eval.modes[:1]), iteration)


def finish(r: Run, train_time: float, sinks: Sinks) -> dict:
    """Evaluate in every eval mode, measure the model's cost, then write result.json: last,
    whatever the sinks, as its presence marks the run done."""
    t0 = time.perf_counter()
    by_mode = evaluate_split(r, r.cfg.eval.modes)
    eval_time = time.perf_counter() - t0
    spent = measure_cost(r) if r.main else None
    result = record(r, by_mode, train_time, eval_time, spent)
    sinks.evaluated(by_mode, r.cfg.train.iterations)
    sinks.finished(C.to_dict(r.cfg), result)
    if r.main:
        atomic_write_json(r.run_dir / F.RESULT, result)
    return result


def measure_cost(r: Run) -> dict:
    """What this run's model costs at its inputs (danet.engine.cost), measured once per model
    and input: the seeds of a variant share it through RUN_DIR/../.cost/."""
    world, classes = r.info.world_size, len(r.train_set.classes)
    shape = cost.eval_input(r.cfg, r.val_set)
    key = cost.measure_key(r.cfg, classes, [shape, cost.train_input(r.cfg, world)], r.device)

    def make() -> dict:
        model = r.model
        if world > 1:  # a single-process twin: synchronised BatchNorm would wait for the others
            model = step.build_model(r.cfg, classes, r.device)[0]
            model.load_state_dict(r.model.state_dict())
        return cost.measure(model, r.cfg, classes, shape, r.device, world)

    return cost.cached_measure(r.run_dir.parent / F.COST_CACHE, key, make)


def record(
    r: Run, by_mode: dict[str, dict], train_time: float, eval_time: float, spent: dict | None
) -> dict:
    """result.json (schema 1, docs/result-schema.md): what ran, its metrics, its cost, its
    provenance."""
    cfg, world = r.cfg, r.info.world_size
    branches = head.head_branches(cfg.model.variant, cfg.model.head)
    return {
        "schema": RESULT_SCHEMA, "run_id": r.run_dir.name, "config": C.to_dict(cfg),
        "variant": cfg.model.variant, "head": head.kind(branches), "branches": list(branches),
        "backbone": cfg.model.backbone, "dataset": cfg.data.name, "setting": cfg.data.setting,
        "seed": cfg.seed, "iterations": cfg.train.iterations,
        **by_mode[cfg.eval.modes[0]],  # the first eval mode's; every mode's under "eval"
        "eval_mode": cfg.eval.modes[0], "eval": by_mode, "classes": list(r.train_set.classes),
        "params": sum(p.numel() for p in r.model.parameters()),
        "head_params": sum(p.numel() for p in r.model.head.parameters()),
        "pretrained": pretrained_record(r.model.backbone.weights_file),
        "normalization": {"mean": list(r.model.backbone.mean), "std": list(r.model.backbone.std)},
        "frozen_backbone": cfg.model.freeze_backbone,
        "feature_cache": frozen_record(r),
        "plugins": plugins.record(cfg.plugins),  # your attention modules' files and sha256
        "world_size": world, "batch_per_process": cfg.train.batch_size // world,
        "sync_bn": world > 1 and cfg.train.sync_bn,
        "speed": speed.record(cfg, r.device),  # the speed options in effect (docs/speed.md)
        "train_time_s": train_time, "eval_time_s": eval_time,
        "cost": spent,  # params, GMACs, training peak memory, latency (docs/result-schema.md)
        "versions": versions(),
        "git": git_state(),  # of the code that ran: a sweep's snapshot on Slurm
        "code_dir": str(Path(__file__).resolve().parents[2]),
        "device": device_name(r.device), "threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def frozen_record(r: Run) -> dict | None:
    """Where the frozen-feature protocol's cached features came from; None when training the
    backbone."""
    if r.val_features is None:
        return None
    train = r.train_set
    found = {"val": r.val_features, "train": train.plain, "train-mirror": train.mirror}
    return {
        role: {"path": str(e.path), "built": e.built} for role, e in found.items() if e is not None
    }


def pretrained_record(path: str) -> dict | None:
    """Which backbone weights a run started from: None for from scratch."""
    if not path:
        return None
    return {"file": str(Path(path).resolve()), "sha256": sha256_file(Path(path))}
