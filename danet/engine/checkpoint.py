"""Checkpoints in RUN_DIR/ckpt/: written atomically, the newest two kept, resume from the newest
one that loads (a torn or corrupt file falls back to the one before)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from danet.errors import DanetError
from danet.utils import atomic_torch_save

KEEP = 2
PATTERN = re.compile(r"iter_(\d+)\.pt$")


def ckpt_dir(run_dir: Path) -> Path:
    return run_dir / "ckpt"


def save(run_dir: Path, iteration: int, state: dict[str, Any]) -> Path:
    path = ckpt_dir(run_dir) / f"iter_{iteration:07d}.pt"
    atomic_torch_save(path, state)
    for old in list_checkpoints(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def remove_partial(run_dir: Path) -> None:
    """Delete temporary files a killed save left behind (never a finished checkpoint)."""
    for tmp in ckpt_dir(run_dir).glob(".iter_*.tmp"):
        tmp.unlink(missing_ok=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    found = [p for p in ckpt_dir(run_dir).glob("iter_*.pt") if PATTERN.search(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DanetError(f"{path}: checkpoint not found") from None
    except Exception as e:  # torch raises several types for a torn or foreign file
        raise DanetError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def latest(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None when there is none."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load(path)
        except DanetError:
            continue
    return None
