"""The speed options of a run, applied in one place so that training, evaluation and
`danet bench` run the same code: train.channels_last, amp, compile, cudnn_benchmark and the
DataLoader's data.num_workers, pin_memory, persistent_workers.

Exact options (bit-identical numbers in a deterministic fp32 run, tests/test_speed.py): the
DataLoader's. Not exact: channels_last and compile (other kernels, other rounding) and amp;
their effect is measured by `danet bench` and stated in the README.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from danet.config import Config, DataConfig, TrainConfig
from danet.errors import DanetError, unknown_choice

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "off": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check(cfg: TrainConfig, device_type: str) -> None:
    if cfg.amp not in AMP_DTYPES:
        raise unknown_choice("train.amp", cfg.amp, AMP_DTYPES)
    if cfg.amp == "fp16" and device_type != "cuda":
        raise DanetError(
            "'train.amp' is fp16, which needs a CUDA device (a CPU has no fast fp16 and no "
            "grad scaler); use train.amp=bf16 or off"
        )


def set_backends(cfg: TrainConfig, device: torch.device) -> None:
    if device.type == "cuda":  # picks conv algorithms by timing them on the first batch
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark


def prepare(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The model in the configured memory format; the first conv then outputs NHWC for an
    NCHW input, so inputs need no conversion."""
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def compiled(net: nn.Module, cfg: TrainConfig) -> nn.Module:
    return torch.compile(net) if cfg.compile else net


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its range is too narrow for small gradients); a no-op else."""
    return torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")


def loader_options(cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    """DataLoader keyword arguments: pinned memory only pays for a copy to a GPU."""
    workers = cfg.num_workers
    return {
        "num_workers": workers,
        "pin_memory": cfg.pin_memory and device.type == "cuda",
        "persistent_workers": cfg.persistent_workers and workers > 0,
    }


def record(cfg: Config, device: torch.device) -> dict[str, Any]:
    """The options in effect, for result.json (those that do not apply on this device off)."""
    return {
        "channels_last": cfg.train.channels_last,
        "amp": cfg.train.amp,
        "compile": cfg.train.compile,
        "cudnn_benchmark": cfg.train.cudnn_benchmark and device.type == "cuda",
        **loader_options(cfg.data, device),
    }
