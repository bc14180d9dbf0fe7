"""The one error type a user can cause, and the helpers that word it: the CLI prints it as one
line and exits 2. The attention registry (variants/, the ground floor) imports nothing of danet/
but this module, so the typing of a value that config keys and variant options share is here."""

from __future__ import annotations

import contextlib
import difflib
import errno
import math
import shutil
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """`value` checked against the annotation `tp` and converted as YAML needs (a string '1e-3'
    is a float); a DanetError '<source>: '<key>' must be <type>, got <value>' otherwise. Config
    keys (danet.config) and variant options (variants.check_options) are typed by it."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. int | tuple[int, int]: the first fit
        for member in typing.get_args(tp):
            with contextlib.suppress(DanetError):
                return coerce(key, value, member, source)
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            return _sequence(key, value, tp, source)
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is float:
        return _finite(key, value, source)
    elif _is(value, tp):
        return value
    raise DanetError(f"{source}: '{key}' must be {type_name(tp)}, got {value!r}")


def _sequence(key: str, value: list | tuple, tp: Any, source: str) -> tuple:
    args = typing.get_args(tp)
    fixed = typing.get_origin(tp) is tuple and args and args[-1] is not Ellipsis
    if fixed and len(args) != len(value):
        raise DanetError(f"{source}: '{key}' needs {len(args)} values, got {value!r}")
    item = args[0] if args else Any
    return tuple(coerce(key, v, item, source) for v in value)


def _finite(key: str, value: Any, source: str) -> float:
    """A float from a number or a string (YAML 1.1 reads 1e-3, without a dot, as a string)."""
    number = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None:
        raise DanetError(f"{source}: '{key}' must be {type_name(float)}, got {value!r}")
    if not math.isfinite(number):  # nan and inf: no setting means them (nan hides as a loss)
        raise DanetError(f"{source}: '{key}' must be a finite number, got {value!r}")
    return number


def _is(value: Any, tp: Any) -> bool:
    """Whether `value` is of the plain annotation `tp` (true is no integer here)."""
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return tp is Any or not isinstance(tp, type) or isinstance(value, tp)


def type_name(tp: Any) -> str:
    """An annotation as a user reads it: 'an integer', 'a list of 2', 'a number or null'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(m) for m in typing.get_args(tp))
    if origin in (tuple, list):
        n = len(typing.get_args(tp))
        return (
            f"a list of {n}"
            if origin is tuple and Ellipsis not in typing.get_args(tp)
            else "a list"
        )
    if origin is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return "null" if tp is type(None) else names.get(tp, getattr(tp, "__name__", str(tp)))


class Diverged(DanetError):
    """Training produced a non-finite loss: the run's settings (usually train.lr) diverge.

    A DanetError, so `danet train` prints it as one line; the checkpoints already written
    are kept, and a run with a lower lr starts in a new folder (its config differs)."""


def one_line(error: BaseException, limit: int | None = 200) -> str:
    """'Type: first line' of an exception (cut to `limit` characters): a DanetError's cause."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch.load's useful part of a long message
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if limit is not None and len(line) > limit:
        line = line[:limit] + "..."
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
