"""One trainer per run folder: an advisory lock held for the whole run by the writing process.

Two processes training the same folder would interleave checkpoints and delete each other's
temporaries; the lock makes the second one stop at once with a clear error. The kernel drops
the lock when its process ends, however it ends (SIGKILL, preemption), so a requeued or
resumed job never finds a stale one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from danet.errors import DanetError
from danet.run_folder import LOCK


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise DanetError(
                f"{run_dir} is being trained by {holder}; wait for it to end, or stop it "
                "(its sweep: danet status) before training this folder again"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        yield
