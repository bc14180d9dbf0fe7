"""Checkpoints in RUN_DIR/ckpt/: written atomically, the newest two kept, resume from the newest
one that loads (a torn or corrupt file falls back to the one before, and is reported)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from danet.errors import DanetError, one_line
from danet.run_folder import CHECKPOINTS
from danet.utils import atomic_torch_save

KEEP = 2
PATTERN = re.compile(r"iter_(\d+)\.pt$")


def ckpt_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


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
        raise DanetError(f"{path}: not a readable checkpoint ({one_line(e)})") from None


def latest(
    run_dir: Path, on_skip: Callable[[Path, str], None] | None = None
) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None when there is none. Each newer one that
    does not load is passed to `on_skip` with the reason (a one-line DanetError message)."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load(path)
        except DanetError as e:
            if on_skip is not None:
                on_skip(path, str(e))
    return None


def skip_warnings(
    skipped: list[tuple[Path, str]], state: dict[str, Any] | None, use: str = "resuming from"
) -> list[str]:
    """One line per checkpoint that `latest` skipped, saying which iteration is used instead
    (`use`: what is done with it), or that training restarts from 0 when none loaded."""
    where = (
        f"{use} iteration {state['iteration']} instead"
        if state is not None
        else "no readable checkpoint is left, so training restarts from iteration 0"
    )
    return [f"{reason}; skipped, {where}" for _, reason in skipped]
