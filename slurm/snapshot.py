"""Code snapshots of a Slurm sweep (RUNS/<sweep>/.code/<time>-<commit>/), and the rescue of run
folders that an older version wrote inside them.

A snapshot holds code only. Before this was enforced, a relative runs folder resolved inside
the snapshot (submitit's RsyncSnapshot changes the working directory into it), so runs landed
in RUNS/<sweep>/.code/<stamp>/<runs>/<sweep>/<run_id>/ where no sweep, status or table looked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import submitit

from danet import plugins
from danet import run_folder as F
from danet.errors import DanetError
from danet.utils import atomic_write_json, git_state

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def code_snapshot(sweep_dir: Path, plugin_entries: Iterable[str] = ()) -> Iterator[Path]:
    """Jobs submitted inside import the code copied now, so later edits change no queued run:
    the repository's files, and the plugin files among `plugin_entries` (wherever they lie,
    danet.plugins.copy_into). The working directory is the snapshot meanwhile: every path
    given to a job is absolute."""
    state = git_state(REPO)
    if state.get("commit") is None:
        raise DanetError("launcher.snapshot needs a git checkout; run from one, or snapshot: false")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = sweep_dir.absolute() / F.CODE_SNAPSHOTS / f"{stamp}-{state['commit'][:8]}"
    with submitit.helpers.RsyncSnapshot(snapshot_dir=target, root_dir=REPO):
        copied = plugins.copy_into(target, plugin_entries)
        atomic_write_json(
            target / "SNAPSHOT.json", {**state, "taken_at": stamp, "plugins": copied}
        )
        yield target


def stranded_runs(sweep_dir: Path) -> list[Path]:
    """Run folders of this sweep lying inside its code snapshots (written by an older version)."""
    found, code = [], sweep_dir / F.CODE_SNAPSHOTS
    for config in sorted(code.glob(f"*/**/{sweep_dir.name}/*/{F.CONFIG}")):
        if F.CODE_SNAPSHOTS not in config.relative_to(code).parts:
            found.append(config.parent)
    return found


def rescue_stranded(sweep_dir: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Move stranded run folders back to RUNS/<sweep>/<run_id>/; one already there is left in
    place and reported, with the command that settles it. Returns the folders moved."""
    moved = []
    for run_dir in stranded_runs(sweep_dir):
        target = sweep_dir / run_dir.name
        if target.exists():
            echo(
                f"  note: {run_dir} was written inside a code snapshot by an older version and "
                f"{target} exists too; keep one (e.g. rm -r {run_dir})"
            )
            continue
        os.replace(run_dir, target)  # same file system: atomic
        moved.append(target)
    if moved:
        echo(
            f"  moved {len(moved)} run folders that an older version wrote inside code snapshots "
            f"back to {sweep_dir}/"
        )
    return moved
