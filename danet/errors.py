"""The one error type a user can cause; the CLI prints it as one line and exits non-zero."""

from __future__ import annotations

import difflib
import errno
import shutil
from collections.abc import Iterable
from pathlib import Path


class DanetError(Exception):
    """A mistake in the user's input (config, data, variant, checkpoint), with how to fix it."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a valid choice is close to `name`, else ''."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(what: str, name: str, valid: Iterable[str]) -> DanetError:
    valid = sorted(valid)
    return DanetError(
        f"unknown {what} '{name}'{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
    )


class Diverged(DanetError):
    """Training produced a non-finite loss: the run's settings (usually train.lr) diverge.

    A DanetError, so `danet train` prints it as one line; the checkpoints already written
    are kept, and a run with a lower lr starts in a new folder (its config differs)."""


def one_line(error: BaseException) -> str:
    """'Type: first line' of an exception, cut to 200 characters: the cause of a DanetError."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch.load's useful part of a long message
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line[:200] + ("..." if len(line) > 200 else "")
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


FULL = (errno.ENOSPC, errno.EDQUOT)


def no_space(error: BaseException, path: Path) -> DanetError | None:
    """The one-line DanetError for a write of `path` that failed because its file system is
    full (or the user's quota is), else None. The cause is looked for along the exception's
    chain: torch reports a failed write as a RuntimeError raised while handling the OSError."""
    seen: BaseException | None = error
    while seen is not None and not (isinstance(seen, OSError) and seen.errno in FULL):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    try:
        usage = shutil.disk_usage(path.parent)
        space = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        space = "its free space unknown"
    return DanetError(
        f"{path}: no space left on its device ({space}); free some space, then run the same "
        "command: the files written before are kept, and a run resumes from its last checkpoint"
    )


def _size(n: float) -> str:
    """Bytes as people read them: 932.0 KiB, 3.0 MiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while n >= 1024 and len(units) > 1:
        n, units = n / 1024, units[1:]
    return f"{n:.1f} {units[0]}"
