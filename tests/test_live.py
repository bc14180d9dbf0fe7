"""The live view of a waiting sweep (slurm/live.py), as a user sees it: in a terminal (a
pseudo-terminal here) and as plain lines when the output is a file or a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import yaml

from .conftest import TINY

ITERATIONS = 80


def _grid(tmp_path: Path) -> Path:
    config: dict = {}
    for item in [*TINY, f"train.iterations={ITERATIONS}", "train.checkpoint_every=40",
                 "train.tensorboard=false"]:  # fmt: skip
        key, value = item.split("=", 1)
        section, leaf = key.split(".")
        config.setdefault(section, {})[leaf] = yaml.safe_load(value)
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump({
        "name": "live", "config": config, "grid": {"model.variant": ["none", "pam"]},
        "launcher": {"cluster": "local", "max_parallel": 2, "timeout_min": 10},
    }))  # fmt: skip
    return path


def _before_first_done(text: str) -> str:
    assert "  done   " in text, text[-2000:]
    return text[: text.index("  done   ")]


@pytest.mark.slow
def test_terminal_shows_both_runs_progress_and_an_eta_before_either_finishes(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "danet.cli", "sweep", str(_grid(tmp_path)), "--no-report"],
        cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:  # read until the sweep closes the terminal
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the pseudo-terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    before = _before_first_done(text)
    for variant in ("none", "pam"):  # a row of each run: iteration/total, loss, ETA
        assert re.search(rf"{variant}-tiny-synthetic-s0-\w+\s+[1-9]\d*/{ITERATIONS}\s+\d+\.\d{{3}}"
                         r"\s+\d+:\d\d", before), before[-3000:]  # fmt: skip
    assert re.search(r"0/2 done, 2 running, ETA \d+:\d\d", before)  # the sweep's own ETA
    assert "latest " in text and "mIoU" in text


@pytest.mark.slow
def test_outside_a_terminal_progress_comes_as_plain_lines(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "sweep", str(_grid(tmp_path)), "--no-report",
         "--progress-every", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\x1b[" not in out.stdout  # no terminal control sequences in a log file
    before = _before_first_done(out.stdout)
    assert re.search(r"^\[\d+:\d\d\] 0/2 done, 2 running, ETA \d+:\d\d$", before, re.M), before
    for variant in ("none", "pam"):
        assert re.search(rf"^    {variant}-tiny-synthetic-s0-\w+  it [1-9]\d*/{ITERATIONS}  "
                         r"loss \d+\.\d{3}  ETA \d+:\d\d$", before, re.M), before  # fmt: skip
    assert re.search(r"^\[\d+:\d\d\] 2/2 done, ETA \d+:\d\d, latest \S+ mIoU \d+\.\d\d$",
                     out.stdout, re.M)  # fmt: skip
