"""Small helpers with no better home: atomic writes, seeding, provenance."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from danet.errors import no_space

PACKAGES = ("torch", "torchvision", "timm", "numpy", "fvcore", "submitit", "pandas", "seaborn")


def _file_mode() -> int:
    """The mode open() would give a new file (mkstemp's files are 0600, unreadable to a team)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file in the same folder, fsync, then os.replace: readers see
    the old file or the new one, never a half-written one. A full disk is one DanetError
    naming the file and the free space, and leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _file_mode())
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = no_space(e, path)
        if full is not None:
            raise full from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    # a file object, not a path: torch's own writer reports a full disk only as "unexpected
    # pos", while Python's write raises the OSError (ENOSPC) that no_space recognises
    atomic_write(path, lambda f: torch.save(obj, f))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit of the code that is running and whether its tracked files differ from it."""
    cwd = path or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def sha256_file(path: Path) -> str:
    """Hex digest of a file, read in 1 MiB blocks (weights files are hundreds of MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def torch_benchmark():
    """torch.utils.benchmark, imported without the warning "No CUDA runtime is found, using
    CUDA_HOME=..." that its import of torch.utils.cpp_extension logs on a machine without a
    GPU: it concerns compiling CUDA extensions, which nothing here does."""
    import logging

    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        log.setLevel(level)
    return benchmark


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a `danet` subcommand from its module's docstring: its first paragraph as
    the description, the rest (sections, outputs) after the options, line breaks kept."""
    first, _, rest = (doc or "").strip().partition("\n\n")
    return argparse.ArgumentParser(
        prog=prog, description=first, epilog=rest or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def progress_bar(
    total: int, desc: str, enabled: bool = True, unit: str = "it", log_every: float = 10.0,
    initial: int = 0,
) -> Any:
    """A tqdm bar on stderr for work that takes more than a few seconds: redrawn each second
    on a terminal, every `log_every` seconds in a log file (a Slurm job's stderr)."""
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
        mininterval=1.0 if sys.stderr.isatty() else log_every, dynamic_ncols=True,
    )


def stopped_early(prog: str, csv: Path) -> int:
    """What `danet bench` and `danet profile` say on Ctrl-C: how many rows their CSV keeps,
    counted on disk (every row is written as it is measured); exit code 130."""
    import pandas as pd

    rows = len(pd.read_csv(csv)) if csv.is_file() else 0
    kept = f"{csv} keeps the {rows} rows measured" if rows else "no rows"
    print(f"{prog}: stopped; {kept}", file=sys.stderr)
    return 130
