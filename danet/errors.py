"""The one error type a user can cause; the CLI prints it as one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
