"""The speed options of a run, applied in one place so that training, evaluation and
`danet bench` run the same code: train.channels_last, amp, compile, cudnn_benchmark,
keep_freed_memory and the DataLoader's data.num_workers, pin_memory, persistent_workers.

Exact options (bit-identical numbers in a deterministic fp32 run, tests/test_speed.py): the
DataLoader's and keep_freed_memory. Not exact: channels_last and compile (other kernels,
other rounding) and amp; their effect is measured by `danet bench` and stated in docs/speed.md.
"""

from __future__ import annotations

import contextlib
import ctypes
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


def check(cfg: TrainConfig, device_type: str | None) -> None:
    """Option values; with the device type (None: not known yet), whether it has them."""
    if cfg.amp not in AMP_DTYPES:
        raise unknown_choice("train.amp", cfg.amp, AMP_DTYPES)
    if cfg.amp == "fp16" and device_type not in ("cuda", None):
        raise DanetError(
            "'train.amp' is fp16, which needs a CUDA device (a CPU has no fast fp16 and no "
            "grad scaler); use train.amp=bf16 or off"
        )


def set_backends(cfg: TrainConfig, device: torch.device) -> None:
    """Process-wide settings; `danet bench` calls this before each step of each trainer."""
    if device.type == "cuda":  # picks conv algorithms by timing them on the first batch
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    keep_freed_memory(cfg.keep_freed_memory)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4


def _mallopt() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory(keep: bool) -> bool:
    """torch has no caching allocator on the CPU, and glibc maps each block over its mmap
    threshold (at most 32 MiB) afresh and unmaps it when freed: every training step then
    faults its large activations in again, page by page, zero-filled by the kernel (about
    1 s of a 7.4 s ResNet-50-D8 step here). `keep` serves every block from the heap and
    never trims it; off restores glibc's settings as they stand once its dynamic threshold
    has risen (mmap over 32 MiB, trim over 64 MiB). The numbers do not change. Returns
    whether glibc took the settings (False elsewhere, e.g. macOS)."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if keep:
        settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    else:
        settings = ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20))
    return all(mallopt(param, value) == 1 for param, value in settings)


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
        "keep_freed_memory": cfg.train.keep_freed_memory and _mallopt() is not None,
        **loader_options(cfg.data, device),
    }
