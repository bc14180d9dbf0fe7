"""What a waiting `danet sweep` shows: runs done / running / pending / failed of M, each
running run's iteration, loss and ETA (from its log.jsonl), the sweep's ETA and the latest
finished mIoU. In a terminal a live panel (rich) under the start/done lines; otherwise plain
lines, every `every_s` seconds and whenever a run starts or ends.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from danet import run_folder as F
from danet.run_folder import State
from slurm.grid import Launcher, RunSpec
from slurm.status import RunState, duration, run_state, slurm_queue


def sweep_eta(states: list[tuple[RunSpec, RunState]], slots: int) -> float | None:
    """Seconds until every unfinished run has trained: each run's iterations left at its own
    pace (a run without one yet: its variant's mean pace, else the sweep's), spread over
    `slots` runs at once, never less than the longest single run left. Evaluation excluded."""
    paces: dict[str, list[float]] = {}
    for spec, st in states:
        if st.seconds_per_iteration:
            paces.setdefault(spec.cfg.model.variant, []).append(st.seconds_per_iteration)
    if not paces:
        return None
    overall = [p for ps in paces.values() for p in ps]
    left = []
    for spec, st in states:
        if st.state in (State.DONE, State.FAILED):
            continue
        pace = st.seconds_per_iteration or _mean(paces.get(spec.cfg.model.variant) or overall)
        left.append(max(0, (st.iterations or spec.cfg.train.iterations) - st.iteration) * pace)
    return max(max(left, default=0.0), sum(left) / max(1, slots))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class LiveView:
    def __init__(
        self, specs: list[RunSpec], launcher: Launcher, stream: TextIO | None = None,
        every_s: float = 30.0,
    ) -> None:
        self.specs, self.launcher = specs, launcher
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.started = time.monotonic()
        self.last_poll = self.last_lines = -1e9
        self.last_counts: dict[str, int] = {}
        self.done: dict[str, RunState] = {}  # run id -> its state, once done
        self.live: Live | None = None
        if self.tty:
            self.console = Console(file=self.stream, highlight=False)
            self.live = Live(console=self.console, refresh_per_second=2, transient=True)
            self.live.start()

    # ------------------------------------------------------------ output

    def echo(self, line: str) -> None:
        """A line of the sweep's own (start, done, FAILED): above the live panel."""
        if self.live is not None:
            self.console.print(Text(line))
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """The panel removed; in a log, a last summary when the sweep waited on something."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.last_lines > -1e9:
            self.tick(force=True)

    # ------------------------------------------------------------ polling

    def tick(self, force: bool = False) -> None:
        """Called while the sweep waits; reads the runs' files at most once a second (and asks
        squeue at most every 5 s: a busy scheduler should not hear from every sweep at once).
        `force`: read and print now (the last word of a logged sweep, after its done lines)."""
        now = time.monotonic()
        if now - self.last_poll < (5.0 if self.launcher.cluster == "slurm" else 1.0) and not force:
            return
        self.last_poll = now
        queue = slurm_queue() if self.launcher.cluster == "slurm" else None
        states = [(spec, self._state(spec, queue)) for spec in self.specs]
        if self.live is not None:
            self.live.update(self.render(states))
            return
        counts = _counts(states)
        due = counts != self.last_counts or now - self.last_lines >= self.every_s
        if self.every_s and (due or force):
            self.last_counts, self.last_lines = counts, now
            for line in self.lines(states):
                print(line, file=self.stream, flush=True)

    def _state(self, spec: RunSpec, queue) -> RunState:
        """A run's state; a done one is read once (its files no longer change)."""
        st = self.done.get(spec.run_id) or run_state(spec.run_dir, queue)
        if st.state == State.DONE:
            self.done[spec.run_id] = st
        return st

    def _slots(self, states: list[tuple[RunSpec, RunState]]) -> int:
        if self.launcher.cluster == "slurm":  # the scheduler decides: as many as run now
            return max(1, sum(st.state == State.RUNNING for _, st in states))
        return self.launcher.max_parallel

    def summary(self, states: list[tuple[RunSpec, RunState]]) -> str:
        counts = _counts(states)
        eta = sweep_eta(states, self._slots(states))
        parts = [f"{counts.get(State.DONE, 0)}/{len(states)} done"]
        kinds = (State.RUNNING, State.PENDING, State.REQUEUED, State.FAILED, State.STOPPED,
                 State.CANCELLED)
        parts += [f"{counts[k]} {k}" for k in kinds if counts.get(k)]
        if any(st.state in F.ACTIVE or st.state == State.NEW for _, st in states):  # work left
            parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA after the first steps")
        latest = _latest(states)
        if latest:
            parts.append(f"latest {latest}")
        return f"[{duration(time.monotonic() - self.started)}] " + ", ".join(parts)

    def lines(self, states: list[tuple[RunSpec, RunState]]) -> list[str]:
        """The non-terminal form: the summary, then one line per running run."""
        out = [self.summary(states)]
        for spec, st in states:
            if st.state == State.RUNNING:
                out.append(f"    {spec.run_id}  {_progress(st)}")
        return out

    def render(self, states: list[tuple[RunSpec, RunState]]) -> Group:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for i, column in enumerate(("running", "iteration", "loss", "ETA")):
            table.add_column(column, justify="right" if i else "left")  # run ids left
        for spec, st in states:
            if st.state == State.RUNNING:
                loss = f"{st.loss:.3f}" if st.loss is not None else ""
                table.add_row(spec.run_id, f"{st.iteration}/{st.iterations}", loss,
                              duration(st.eta_s))
        return Group(Text(self.summary(states), style="bold"), table)


def _progress(st: RunState) -> str:
    loss = f"  loss {st.loss:.3f}" if st.loss is not None else ""
    eta = f"  ETA {duration(st.eta_s)}" if st.eta_s is not None else ""
    return f"it {st.iteration}/{st.iterations}{loss}{eta}"


def _counts(states: list[tuple[RunSpec, RunState]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, st in states:
        key = State.PENDING if st.state == State.NEW else st.state
        out[key] = out.get(key, 0) + 1
    return out


def _latest(states: list[tuple[RunSpec, RunState]]) -> str:
    """The run that finished last, with its mIoU."""
    done = [(spec, st) for spec, st in states if st.state == State.DONE and st.miou is not None]
    if not done:
        return ""
    spec, st = max(done, key=lambda d: (d[0].run_dir / F.RESULT).stat().st_mtime)
    return f"{spec.run_id} mIoU {100 * st.miou:.2f}"
