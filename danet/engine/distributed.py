"""Several processes training one run: set-up from the environment, and SyncBN on the CPU.

The environment is torch's (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), as
`torchrun` sets it and as slurm/launch.py exports it from submitit's job environment. One
process, without those variables, is the plain case: no process group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()  # one process, no process group


def setup(use_cuda: bool) -> DistInfo:
    """Join the process group the environment describes (nccl on GPUs, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, local, world)


def teardown(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over processes (in place); the identity for one process."""
    if info.world_size > 1:
        dist.all_reduce(t)
    return t


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm statistics over the whole batch of all processes, as DANet trains."""
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm  # keeps timm's BatchNormAct2d acts

        return convert_sync_batchnorm(model)
    return _to_cpu_sync(model)


# torch's SyncBatchNorm refuses CPU tensors; this one all-reduces over gloo the same sums
# (per-channel count, sum, sum of squares forward; sum of dy and of dy * x_hat backward).
class _SyncBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dims = [0, 2, 3]
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        dist.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        invstd = torch.rsqrt(var + eps)
        x_hat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
        ctx.save_for_backward(x_hat, weight, invstd, n)
        ctx.mark_non_differentiable(mean, var, n)
        return x_hat * weight[None, :, None, None] + bias[None, :, None, None], mean, var, n

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dn):
        x_hat, weight, invstd, n = ctx.saved_tensors
        dims = [0, 2, 3]
        sum_dy, sum_dy_xhat = dy.sum(dims), (dy * x_hat).sum(dims)
        both = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(both)
        c = dy.shape[1]
        g_mean, g_xhat = both[:c] / n, both[c:] / n
        dx = (dy - g_mean[None, :, None, None] - x_hat * g_xhat[None, :, None, None]) * (
            weight * invstd
        )[None, :, None, None]
        return dx, sum_dy_xhat, sum_dy, None


class CPUSyncBatchNorm(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, var, n = _SyncBN.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():  # running statistics as BatchNorm keeps them (unbiased variance)
            self.num_batches_tracked.add_(1)
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        return y


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:  # exactly: subclasses (BatchNormAct2d) carry more
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child))
    return module
