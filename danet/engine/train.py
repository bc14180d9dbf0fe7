"""The one training loop shared by every variant: `run(cfg, run_dir)`.

RUN_DIR/config.yaml   the resolved config (a different one in the same folder is an error)
RUN_DIR/log.jsonl     one JSON object per line: train steps, resume and eval events
RUN_DIR/ckpt/         atomic checkpoints every train.checkpoint_every iterations
RUN_DIR/result.json   written last and atomically; its presence marks the run done
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import variants
from danet import config as C
from danet.data import build_dataset, check_data_config
from danet.data.sampler import ResumableSampler, seed_from
from danet.data.transforms import pair
from danet.engine import checkpoint, distributed, run_lock, speed
from danet.engine.evaluate import evaluate, metrics_dict
from danet.engine.inference import MODES, resize_to
from danet.errors import DanetError, Diverged, unknown_choice
from danet.models import BACKBONES, Segmentor
from danet.models.head import head_branches
from danet.utils import (
    atomic_write_bytes,
    atomic_write_json,
    device_name,
    git_state,
    seed_everything,
    sha256_file,
    versions,
)

SCHEMA = 1


def check_config(cfg: C.Config) -> None:
    """Semantic checks that need the registries; cheap, so a sweep checks every run up front."""
    if cfg.model.backbone not in BACKBONES:
        raise unknown_choice("model.backbone", cfg.model.backbone, BACKBONES)
    if cfg.model.variant not in variants.available():
        raise unknown_choice("model.variant", cfg.model.variant, variants.available())
    branches = head_branches(cfg.model.variant, cfg.model.head)
    for branch, opts in zip(
        branches, variants.branch_options(cfg.model.variant, cfg.model.variant_opts)
    ):
        variants.create(branch, 8, **opts)  # checks option names, types and ranges
    check_data_config(cfg.data)
    positive = {
        "train.iterations": cfg.train.iterations,
        "train.batch_size": cfg.train.batch_size,
        "data.crop_size": min(pair(cfg.data.crop_size)),
        "data.image_size": cfg.data.image_size,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.log_every": cfg.train.log_every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise DanetError(f"'{key}' must be positive, got {value}")
    if min(pair(cfg.data.base_size)) < 0:
        raise DanetError(
            f"'data.base_size' must be 0, a size, or (long, short); got {cfg.data.base_size}"
        )
    lo, hi = cfg.data.scale_range
    if not 0 < lo <= hi:
        raise DanetError(
            f"'data.scale_range' must be [low, high] with 0 < low <= high, got {[lo, hi]}"
        )
    outputs = 3 if len(branches) == 2 else 1
    if len(cfg.train.loss_weights) < outputs:
        raise DanetError(
            f"'train.loss_weights' has {len(cfg.train.loss_weights)} weights; variant "
            f"'{cfg.model.variant}' has {outputs} outputs in this head (fused, then per branch)"
        )
    check_eval_config(cfg.eval)
    if cfg.train.device not in ("auto", "cpu") and not cfg.train.device.startswith("cuda"):
        raise DanetError(f"'train.device' must be auto, cpu or cuda[:N], got '{cfg.train.device}'")
    # the device may be absent where a sweep is submitted: fp16 is refused here on cpu only
    speed.check(cfg.train, "cpu" if cfg.train.device == "cpu" else None)


def pretrained_record(path: str) -> dict | None:
    """Which backbone weights a run started from: None for from scratch."""
    if not path:
        return None
    return {"file": str(Path(path).resolve()), "sha256": sha256_file(Path(path))}


def check_eval_config(ev: C.EvalConfig) -> None:
    if not ev.modes:
        raise DanetError("'eval.modes' is empty; give one or more of " + ", ".join(MODES))
    for mode in ev.modes:
        if mode not in MODES:
            raise unknown_choice("eval.modes entry", mode, MODES)
    if len(set(ev.modes)) != len(ev.modes):
        raise DanetError(f"'eval.modes' repeats a mode: {list(ev.modes)}")
    if not 0 < ev.stride_rate <= 1:
        raise DanetError(f"'eval.stride_rate' must be in (0, 1], got {ev.stride_rate}")
    if not ev.scales or min(ev.scales) <= 0:
        raise DanetError(f"'eval.scales' must be positive numbers, got {list(ev.scales)}")
    if min(pair(ev.crop_size)) < 0:
        raise DanetError(f"'eval.crop_size' must be positive or 0, got {ev.crop_size}")
    resize_to(1, 1, ev.resize)  # raises on a malformed eval.resize


def _board(run_dir: Path, start: int):
    """TensorBoard events in RUN_DIR/tb; a resumed run drops events past its checkpoint."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start + 1 if start else None)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DanetError(f"'train.device' is {name} but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


def write_config(run_dir: Path, cfg: C.Config) -> None:
    """Write RUN_DIR/config.yaml, or check that the one there is cfg. A config.yaml that is
    empty, not YAML or cut short is said to be so (not "a different config"), with the fix."""
    path = run_dir / "config.yaml"
    text = yaml.safe_dump(C.to_dict(cfg), sort_keys=False)
    if not path.exists():
        atomic_write_bytes(path, text.encode())
        return
    fix = f"delete the run folder {run_dir} to start over, or restore the file"
    try:
        saved = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DanetError(f"{path}: unreadable ({type(e).__name__}: {e}); {fix}") from None
    if not saved.strip():
        raise DanetError(f"{path} is empty; {fix}")
    cut = "" if saved.endswith("\n") else "; it is truncated"  # safe_dump ends with a newline
    try:
        data = C.load_yaml(path)  # names the line and column of a YAML error
    except DanetError as e:
        raise DanetError(f"{e}{cut}; {fix}") from None
    try:
        if C.from_dict(data, str(path)) == cfg:
            return
        problem = ""
    except DanetError as e:  # e.g. a value cut short to another type
        problem = str(e)
    keys, order = list(C.flatten(data)), list(C.flat_keys())
    # safe_dump writes every key in field order: a file of only a leading run of them was
    # cut short (a file of an older version lacks keys in the middle, and may still match)
    if cut or (len(keys) < len(order) and keys == order[: len(keys)]):
        last = f"'{keys[-1]}'" if keys else "nothing"
        raise DanetError(f"{path} is truncated (it stops after {last}); {fix}")
    if problem:
        raise DanetError(f"{problem}; {fix}")
    raise DanetError(f"{path} holds a different config; resume with it or use another run dir")


def poly_lr(optimizer: torch.optim.Optimizer, it: int, total: int, power: float) -> float:
    factor = (1 - it / total) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def segmentation_loss(
    outputs: list[torch.Tensor],
    target: torch.Tensor,
    weights: tuple[float, ...],
    ignore_index: int,
    info: distributed.DistInfo = distributed.SINGLE,
) -> tuple[torch.Tensor, list[float]]:
    """Weighted cross-entropy of each output, averaged over the labelled pixels of the whole
    batch: with several processes each sums its pixels and divides by the count of all of
    them, times the world size that DDP's gradient averaging divides by again."""
    if info.world_size == 1:
        parts = [F.cross_entropy(o, target, ignore_index=ignore_index) for o in outputs]
    else:
        labelled = distributed.all_sum((target != ignore_index).sum().float(), info)
        scale = info.world_size / labelled.clamp(min=1)
        parts = [
            F.cross_entropy(o, target, ignore_index=ignore_index, reduction="sum") * scale
            for o in outputs
        ]
    total = sum(w * p for w, p in zip(weights, parts))
    return total, [float(p.detach()) for p in parts]


class JsonLog:
    def __init__(self, path: Path) -> None:
        self.file = path.open("a")

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def make_optimizer(model: Segmentor, cfg: C.TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum; the head's lr is head_lr_mult times the backbone's (DANet)."""
    return torch.optim.SGD(
        model.param_groups(cfg.lr, cfg.head_lr_mult),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


def train_loader(
    train_set, cfg: C.Config, start: int, info: distributed.DistInfo, device: torch.device
) -> DataLoader:
    """Endless (index, draw) batches of this process from iteration `start` on."""
    world = info.world_size
    return DataLoader(
        train_set,
        batch_size=cfg.train.batch_size // world,
        drop_last=True,
        # process r takes draws r, r + world, ...: together the single-process batch
        sampler=ResumableSampler(
            len(train_set), cfg.seed, start * cfg.train.batch_size, info.rank, world
        ),
        **speed.loader_options(cfg.data, device),
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
    )


def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: tuple[torch.Tensor, torch.Tensor],
    cfg: C.Config,
    ignore: int,
    info: distributed.DistInfo,
    device: torch.device,
    iteration: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """One optimiser step on one batch (forward, the losses, backward, update): the step that
    training runs and `danet bench` times."""
    img, lab = (t.to(device, non_blocking=True) for t in batch)
    with speed.autocast(cfg.train.amp, device):  # the losses in fp32 (autocast's rule)
        loss, parts = segmentation_loss(net(img), lab, cfg.train.loss_weights, ignore, info)
    finite = distributed.all_sum(torch.isfinite(loss.detach()).float(), info)
    if not bool(finite == info.world_size):
        raise Diverged(f"loss is {float(loss.detach())} at iteration {iteration}; lower train.lr")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # skips the step when fp16 gradients overflowed
    scaler.update()
    return loss, parts


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (ru_maxrss)"


def run(
    cfg: C.Config, run_dir: Path, stop_after: int | None = None, progress: bool = True
) -> dict | None:
    """Train and evaluate one run; resume from its newest checkpoint; skip it when done.

    Several processes (RANK/WORLD_SIZE in the environment, danet.engine.distributed) train
    it together; rank 0 alone writes. `stop_after` ends training after that iteration
    (after its checkpoint), as an interruption would; the result is then None.
    """
    check_config(cfg)
    run_dir = Path(run_dir)
    if (run_dir / "result.json").exists():
        write_config(run_dir, cfg)  # a finished run of another config is refused, not returned
        return json.loads((run_dir / "result.json").read_text())
    device_type = pick_device(cfg.train.device).type
    speed.check(cfg.train, device_type)
    info = distributed.setup(device_type == "cuda")
    original = _PREEMPTION.install()
    try:
        with run_lock.exclusive(run_dir) if info.is_main else contextlib.nullcontext():
            if (run_dir / "result.json").exists():  # finished while this process waited
                return json.loads((run_dir / "result.json").read_text())
            return _run(cfg, run_dir, info, stop_after, progress)
    finally:
        _PREEMPTION.reset(original)
        distributed.teardown(info)


class _Preemption:
    """When Slurm announces the end (USR2), submitit's handler calls TrainJob.checkpoint(),
    which calls `save_for_preemption`: save the last finished iteration. The handler is
    deferred to the end of the running step, when model and optimizer agree (blocking the
    signal would not do: torch's worker threads would take it instead)."""

    save: Any = None
    in_step = False
    pending: Any = None

    def install(self) -> Any:
        """Wrap the Python handler of USR2, if any; returns what to restore."""
        if threading.current_thread() is not threading.main_thread():
            return None
        original = signal.getsignal(signal.SIGUSR2)
        if not callable(original):
            return None

        def deferred(signum: int, frame: Any) -> None:
            if self.in_step:
                self.pending = (original, signum, frame)
            else:
                original(signum, frame)

        signal.signal(signal.SIGUSR2, deferred)
        return original

    def step_done(self) -> None:
        self.in_step = False
        if self.pending:
            handler, signum, frame = self.pending
            self.pending = None
            handler(signum, frame)

    def reset(self, original: Any) -> None:
        self.save, self.in_step, self.pending = None, False, None
        if original is not None:
            signal.signal(signal.SIGUSR2, original)


_PREEMPTION = _Preemption()


def save_for_preemption() -> None:
    if _PREEMPTION.save is not None:
        _PREEMPTION.save()


def _device(cfg: C.Config, info: distributed.DistInfo) -> torch.device:
    device = pick_device(cfg.train.device)
    if device.type == "cuda" and info.world_size > 1:
        return torch.device("cuda", info.local_rank)
    return device


def _run(
    cfg: C.Config,
    run_dir: Path,
    info: distributed.DistInfo,
    stop_after: int | None,
    progress: bool,
) -> dict | None:
    world, main = info.world_size, info.is_main
    if cfg.train.batch_size % world:
        raise DanetError(
            f"'train.batch_size' ({cfg.train.batch_size}) is the total over {world} processes "
            "and must divide evenly among them"
        )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg)
        checkpoint.remove_partial(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = _device(cfg, info)
    speed.set_backends(cfg.train, device)
    seed_everything(cfg.seed)  # the same initial weights in every process

    train_set = build_dataset(cfg.data, "train", cfg.seed)
    val_set = build_dataset(cfg.data, "val", cfg.seed)  # now: a bad file fails before training
    num_classes, ignore = len(train_set.classes), train_set.ignore_index
    model = speed.prepare(Segmentor(cfg.model, num_classes).to(device), cfg.train)
    sync_bn = world > 1 and cfg.train.sync_bn
    if sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    optimizer = make_optimizer(model, cfg.train)
    scaler = speed.grad_scaler(cfg.train, device)
    log = JsonLog(run_dir / "log.jsonl") if main else None
    start, elapsed = 0, 0.0
    skipped: list[tuple[Path, str]] = []
    state = checkpoint.latest(run_dir, on_skip=lambda path, why: skipped.append((path, why)))
    # A restart from 0 keeps log.jsonl (nothing written is deleted): its lines past iteration
    # 0 repeat later, readers keep an iteration's last line, and this warning marks the restart.
    for message in checkpoint.skip_warnings(skipped, state) if main else []:
        print(f"warning: {message}", file=sys.stderr)
        log.write(event="warning", message=message)
    if state is not None:
        start = state["iteration"]
    board = _board(run_dir, start) if main and cfg.train.tensorboard else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if world == 1:  # several processes reseed every iteration instead (below)
            torch.set_rng_state(state["rng_cpu"])
            if device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], device)
        start, elapsed = state["iteration"], state["elapsed"]
        if log:
            log.write(event="resume", iteration=start)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    net = speed.compiled(net, cfg.train)

    total = cfg.train.iterations
    batches = iter(train_loader(train_set, cfg, start, info, device))
    model.train()
    bar = tqdm(
        range(start, total),
        initial=start,
        total=total,
        desc=run_dir.name,
        disable=not (progress and main),
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        file=sys.stderr,
    )
    clock = {"tick": time.perf_counter(), "elapsed": elapsed, "logged": start}
    clock["at"] = clock["tick"]

    def save(done: int) -> None:
        if not main:
            return
        now = time.perf_counter()
        clock["elapsed"] += now - clock["tick"]
        clock["tick"] = now
        checkpoint.save(
            run_dir,
            done,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "iteration": done,
                "elapsed": clock["elapsed"],
            },
        )

    done = start
    _PREEMPTION.save = lambda: save(done)
    for it in bar:
        _PREEMPTION.in_step = True
        if world > 1:  # dropout from (seed, rank, iteration): a resume repeats it exactly
            torch.manual_seed(seed_from(cfg.seed, info.rank, it))
        lr = poly_lr(optimizer, it, total, cfg.train.poly_power)
        loss, parts = train_step(
            net, optimizer, scaler, next(batches), cfg, ignore, info, device, it
        )
        done = it + 1
        if done % cfg.train.log_every == 0 or done == total:
            shown = float(distributed.all_sum(loss.detach().clone(), info)) / world
            now = time.perf_counter()
            if log:
                log.write(
                    iteration=done,
                    loss=shown,
                    losses=parts,
                    lr=lr,
                    time=now - clock["tick"] + clock["elapsed"],
                )
            if board:
                rate = (done - clock["logged"]) * cfg.train.batch_size / (now - clock["at"])
                board.add_scalar("train/loss", shown, done)
                for name, part in zip(("fused", "branch_a", "branch_b"), parts):
                    board.add_scalar(f"train/loss_{name}", part, done)
                board.add_scalar("train/lr", lr, done)
                board.add_scalar("train/images_per_s", rate, done)
                board.add_scalar("train/peak_memory_mb", peak_memory_mb(device)[0], done)
                clock.update(logged=done, at=now)
            bar.set_postfix(loss=f"{shown:.3f}")
        if done % cfg.train.checkpoint_every == 0 or done in (total, stop_after):
            save(done)
        _PREEMPTION.step_done()  # a USR2 that came during the step is handled here
        if done == stop_after and done < total:
            bar.close()
            if log:
                log.close()
            if board:
                board.close()
            return None
    bar.close()
    _PREEMPTION.save = None
    elapsed = clock["elapsed"] + time.perf_counter() - clock["tick"]

    t_eval = time.perf_counter()
    shard = val_set
    if world > 1:  # each process scores every world-th image; the counts are summed
        shard = Subset(val_set, range(info.rank, len(val_set), world))
        shard.same_size = getattr(val_set, "same_size", False)
    cms = evaluate(
        model, shard, num_classes, device, cfg.eval, cfg.data.crop_size, ignore,
        num_workers=cfg.data.num_workers, amp=cfg.train.amp,
    )  # fmt: skip
    for cm in cms.values():
        distributed.all_sum(cm.mat, info)
    by_mode = {mode: metrics_dict(cm, train_set.classes) for mode, cm in cms.items()}
    metrics = by_mode[cfg.eval.modes[0]]
    memory, memory_kind = peak_memory_mb(device)
    result = {
        "schema": SCHEMA,
        "run_id": run_dir.name,
        "config": C.to_dict(cfg),
        "variant": cfg.model.variant,
        "head": "dual" if model.head.num_outputs == 3 else "single",
        "branches": list(head_branches(cfg.model.variant, cfg.model.head)),
        "backbone": cfg.model.backbone,
        "dataset": cfg.data.name,
        "setting": cfg.data.setting,
        "seed": cfg.seed,
        "iterations": total,
        **metrics,  # of the first eval mode; every mode's are under "eval"
        "eval_mode": cfg.eval.modes[0],
        "eval": by_mode,
        "classes": list(train_set.classes),
        "params": sum(p.numel() for p in model.parameters()),
        "head_params": sum(p.numel() for p in model.head.parameters()),
        "pretrained": pretrained_record(cfg.model.pretrained),
        "world_size": world,
        "batch_per_process": cfg.train.batch_size // world,
        "sync_bn": sync_bn,
        "speed": speed.record(cfg, device),  # the speed options in effect (README, Speed)
        "train_time_s": elapsed,
        "eval_time_s": time.perf_counter() - t_eval,
        "peak_memory_mb": memory,  # of rank 0's process
        "peak_memory_kind": memory_kind,
        "versions": versions(),
        "git": git_state(),  # of the code that ran: a sweep's snapshot on Slurm
        "code_dir": str(Path(__file__).resolve().parents[2]),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if log:
        for mode, m in by_mode.items():
            log.write(event="eval", iteration=total, mode=mode, miou=m["miou"])
        log.close()
    if board:
        for mode, m in by_mode.items():
            board.add_scalar(f"val/miou_{mode}", m["miou"], total)
        board.close()
    if main:  # last, whatever the sinks: its presence marks the run done
        atomic_write_json(run_dir / "result.json", result)
    return result
