"""Preemption of one run. When Slurm announces the end (USR2: time limit near, or preemption),
submitit's handler calls the job's `checkpoint()` (slurm.launch.TrainJob), which calls
`save_now()` of the run's Preemption: the last finished iteration is saved, then submitit
requeues the job and it resumes from that checkpoint.

The handler is deferred to the end of the running step, when model and optimiser agree
(blocking the signal would not do: torch's worker threads would take it instead).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Preemption:
    def __init__(self) -> None:
        self.save: Callable[[], None] | None = None  # set by the loop while it trains
        self.in_step = False
        self.pending: tuple[Any, int, Any] | None = None

    def save_now(self) -> None:
        if self.save is not None:
            self.save()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """While the run lasts, a USR2 that arrives mid-step waits for the step's end."""
        original = None
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGUSR2)
            if callable(handler):
                original = handler
                signal.signal(signal.SIGUSR2, self._deferred(handler))
        try:
            yield
        finally:
            self.save, self.in_step, self.pending = None, False, None
            if original is not None:
                signal.signal(signal.SIGUSR2, original)

    def _deferred(self, original: Callable) -> Callable:
        def deferred(signum: int, frame: Any) -> None:
            if self.in_step:
                self.pending = (original, signum, frame)
            else:
                original(signum, frame)

        return deferred

    @contextmanager
    def step(self) -> Iterator[None]:
        """One training step; a USR2 that came during it is handled when it ends."""
        self.in_step = True
        yield
        self.in_step = False
        if self.pending:
            handler, signum, frame = self.pending
            self.pending = None
            handler(signum, frame)
