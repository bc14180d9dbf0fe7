"""One optimisation step and what it needs (device, optimiser, lr schedule, loss, loader):
the step that `danet.engine.train` runs and `danet bench` times, so both time the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from danet import config as C
from danet.data.sampler import ResumableSampler
from danet.engine import distributed, speed
from danet.errors import DanetError, Diverged
from danet.models import Segmentor


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DanetError(f"'train.device' is {name} but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


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


def build_model(
    cfg: C.Config, num_classes: int, device: torch.device, world_size: int = 1
) -> tuple[Segmentor, torch.optim.Optimizer, torch.amp.GradScaler]:
    """The model (speed options applied; SyncBatchNorm across several processes), its optimiser
    and grad scaler, from the current random state: what training runs and `danet bench` times."""
    model = speed.prepare(Segmentor(cfg.model, num_classes).to(device), cfg.train)
    if world_size > 1 and cfg.train.sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    return model, make_optimizer(model, cfg.train), speed.grad_scaler(cfg.train, device)


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
