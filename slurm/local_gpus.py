"""GPUs for the runs of a local sweep. submitit's local executor sets each job's
CUDA_VISIBLE_DEVICES to the GPUs it is given, and to "" (no GPU at all) when given none, so a
local sweep on a GPU machine must hand them out itself, or every run trains on the CPU.

Each run whose `train.device` is auto or cuda gets GPUs of its own (one per process:
launcher.tasks_per_node), none shared with another running run; an explicit cuda:N run sees
every GPU, so that N means what it says. By default as many runs go at once as the GPUs
allow (slurm.grid.default_parallel).
"""

from __future__ import annotations

import os

from danet import config as C
from danet.errors import DanetError


def local_gpus() -> list[int]:
    """The GPU indices this sweep may use: those CUDA_VISIBLE_DEVICES lists, else every GPU
    torch sees; [] on a machine without one."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not listed:
        return list(range(torch.cuda.device_count()))
    ids = [x.strip() for x in listed.split(",") if x.strip()]
    if not all(x.isdigit() for x in ids):
        raise DanetError(
            f"CUDA_VISIBLE_DEVICES={listed} names GPUs by UUID; a local sweep hands GPUs to its "
            "runs by index: give indices (e.g. 0,1)"
        )
    return [int(x) for x in ids]


def wants_gpu(cfg: C.Config) -> bool:
    return cfg.train.device == "auto" or cfg.train.device.startswith("cuda")


def gpus_for(cfg: C.Config, per_run: int, pool: list[int], in_use: set[int]) -> list[int] | None:
    """The GPUs to give a run now: [] for a CPU run (or a machine without GPUs), its own free
    ones, every GPU for an explicit cuda:N; None when it must wait for GPUs to free up."""
    if not pool or not wants_gpu(cfg):
        return []
    if per_run > len(pool):
        raise DanetError(
            f"launcher.tasks_per_node={per_run} needs {per_run} GPUs a run; this machine lets "
            f"the sweep use {len(pool)} (CUDA_VISIBLE_DEVICES); lower it, or train.device=cpu"
        )
    if cfg.train.device not in ("auto", "cuda"):  # cuda:N indexes the machine's GPUs
        return None if in_use else list(pool)
    free = [g for g in pool if g not in in_use]
    return free[:per_run] if len(free) >= per_run else None


def parallel_runs(cfg: C.Config, per_run: int, pool: list[int]) -> int:
    """Runs at once on this machine's GPUs (0: the runs do not use them)."""
    if not pool or not wants_gpu(cfg):
        return 0
    return max(1, len(pool) // max(1, per_run))
