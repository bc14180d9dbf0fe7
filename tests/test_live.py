"""The live view of a waiting sweep (slurm/live.py), as a user sees it: in a terminal (a
pseudo-terminal here) and as plain lines when the output is a file or a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from slurm.grid import Launcher
from slurm.live import LiveView

from .conftest import tiny_grid

ITERATIONS = 150


def _grid(tmp_path: Path) -> Path:
    return tiny_grid(tmp_path / "live.yaml", "live", f"train.iterations={ITERATIONS}",
                     "train.checkpoint_every=40", "train.tensorboard=false")


def _before_first_done(text: str) -> str:
    assert "  done   " in text, text[-2000:]
    return text[: text.index("  done   ")]


def _in_a_terminal(grid: Path, cwd: Path) -> tuple[subprocess.Popen, int]:
    """`danet sweep GRID` with a 160-column pseudo-terminal as its stdin, stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "danet.cli", "sweep", str(grid), "--no-report"],
        cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    os.close(slave)
    return proc, master


def _read_all(master: int) -> str:
    """What the terminal showed, once every writer has closed it; control sequences removed."""
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the pseudo-terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


@pytest.mark.slow
def test_live_view_in_a_terminal_and_as_plain_lines(tmp_path):
    """Two two-run sweeps at once: one in a terminal (the live panel shows both runs'
    iteration, loss and ETA and the sweep's ETA before either run ends), one into a pipe
    (plain lines every second, no control sequences)."""
    (tmp_path / "tty").mkdir()
    (tmp_path / "pipe").mkdir()
    piped = subprocess.Popen(
        [sys.executable, "-m", "danet.cli", "sweep", str(_grid(tmp_path / "pipe")),
         "--no-report", "--progress-every", "1"],
        cwd=tmp_path / "pipe", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    proc, master = _in_a_terminal(_grid(tmp_path / "tty"), tmp_path / "tty")
    try:
        text = _read_all(master)
        assert proc.wait(timeout=600) == 0
        out, err = piped.communicate(timeout=600)
    finally:
        for p in (proc, piped):
            if p.poll() is None:
                p.kill()
                p.wait()
    before = _before_first_done(text)
    for variant in ("none", "pam"):  # a row of each run: iteration/total, loss, ETA
        assert re.search(rf"{variant}-tiny-synthetic-s0-\w+\s+[1-9]\d*/{ITERATIONS}\s+\d+\.\d{{3}}"
                         r"\s+\d+:\d\d", before), before[-3000:]
    assert re.search(r"0/2 done, 2 running, ETA \d+:\d\d", before)  # the sweep's own ETA
    assert "latest " in text and "mIoU" in text

    assert piped.returncode == 0, out + err
    assert "\x1b[" not in out  # no terminal control sequences in a log file
    before = _before_first_done(out)
    assert re.search(r"^\[\d+:\d\d\] 0/2 done, 2 running, ETA \d+:\d\d$", before, re.M), before
    for variant in ("none", "pam"):
        assert re.search(rf"^    {variant}-tiny-synthetic-s0-\w+  it [1-9]\d*/{ITERATIONS}  "
                         r"loss \d+\.\d{3}  ETA \d+:\d\d$", before, re.M), before
    last = out.rstrip().splitlines()[-1]  # the sweep's last word: everything done
    assert re.fullmatch(r"\[\d+:\d\d\] 2/2 done, latest \S+ mIoU \d+\.\d\d", last), out


def test_a_logged_sweeps_last_word_is_the_summary_even_right_after_a_redraw():
    """The done lines can come within a second of the last redraw (the CI run of 73b8e29 saw
    it): closing the view still prints the summary after them, as the sweep's last line."""
    stream = io.StringIO()
    view = LiveView([], Launcher(), stream=stream, every_s=30.0)
    view.tick()
    view.echo("  done   some-run  mIoU 50.00")
    view.close()
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\[0:00\] 0/0 done", lines[0]), lines
    assert lines[1:] == ["  done   some-run  mIoU 50.00", lines[0]], lines
