"""Progress on stderr for the commands that take a while (eval, visualize, bench, profile),
and bench and profile keeping every row measured when they are stopped part-way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from danet import cli
from danet import config as C
from danet.engine.train import run
from tests.conftest import TINY, wait_for

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def danet_run(tmp_path_factory) -> Path:
    """A tiny trained danet run (PAM and CAM), shared by the eval and visualize tests."""
    folder = tmp_path_factory.mktemp("progress") / "r"
    run(C.build(None, [*TINY, "model.variant=danet"]), folder, progress=False)
    return folder


def test_eval_shows_images_done_and_each_modes_time(danet_run, capsys):
    assert cli.main(["eval", str(danet_run), "--mode", "whole", "--mode", "slide"]) == 0
    err = capsys.readouterr().err
    # tqdm's last redraw: every validation image done, then each mode's seconds per image
    per_mode = r"whole [\d.e-]+ s/img, slide [\d.e-]+ s/img"
    assert re.search(r"eval whole,slide: 100%.* 4/4 .*" + per_mode, err), err


def test_training_shows_no_evaluation_bar(tiny_cfg, tmp_path, capsys):
    """Training's validation keeps to its own bar: the evaluation one is danet eval's."""
    run(tiny_cfg(), tmp_path / "r")
    err = capsys.readouterr().err
    assert "it/s]" in err or "s/it]" in err  # training's bar is there
    assert "eval " not in err and "/img" not in err and "img/" not in err


def test_visualize_says_what_it_is_doing(danet_run, tmp_path, capsys):
    from analysis import visualize

    out = tmp_path / "vis"
    assert visualize.main([str(danet_run), "val:0", "--points", "5,5", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "danet visualize: attention maps of the 64x64 image (one forward pass)" in captured.err
    assert re.search(r"drawing: 100%.* 2/2 ", captured.err)  # the point's PNG and CAM's
    assert captured.out.split() == [str(out / n) for n in ("pam_point_5_5.png", "cam_channels.png")]


# ---------------------------------------------------------------- stopped part-way


def _csv_rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except FileNotFoundError:
        return 0


def _stop_once_written(args: list[str], csv: Path, rows: int, sig: int, log: Path) -> int:
    """Run `python ARGS`, send `sig` as soon as `csv` holds `rows` rows; its exit status.
    Its stderr goes to `log`; nothing it started outlives the call."""
    with log.open("w") as err:
        # own session: killpg reaches any child; SIGINT restored where the parent ignores it
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            wait_for(
                lambda: proc.poll() is not None or _csv_rows(csv) >= rows, 60, f"{rows} rows",
                poll=0.1,
            )
            assert proc.poll() is None, f"finished before it was stopped: {log.read_text()}"
            os.kill(proc.pid, sig)
            return proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_bench_stopped_keeps_every_row_measured(tmp_path, sig):
    csv, log = tmp_path / "bench.csv", tmp_path / "stderr"
    args = ["-m", "analysis.bench", "--quick", "--settings", "default", "--variants",
            "none,pam,danet", "--options", "channels_last", "--out", str(csv)]
    code = _stop_once_written(args, csv, 3, sig, log)
    df = pd.read_csv(csv)  # whole: each rewrite is atomic
    printed = re.findall(r"^\[bench\] default (\w+): ", log.read_text(), re.MULTILINE)
    # a row is written before it is printed; the stop may fall between the two
    assert len(df) >= 3 and len(printed) <= len(df) <= len(printed) + 1
    assert list(df.section[: len(printed)]) == printed
    assert set(df.section) <= {"ceiling", "train", "data", "check", "inference", "option"}
    assert "Dense matmul ceiling" in csv.with_suffix(".md").read_text()  # the same rows
    if sig == signal.SIGINT:
        assert code == 130
        assert f"danet bench: stopped; {csv} keeps the {len(df)} rows measured" in log.read_text()
    else:
        assert code == -sig


def test_profile_stopped_keeps_every_row_measured(tmp_path):
    csv, log = tmp_path / "profile.csv", tmp_path / "stderr"
    names = ["none", "pam", "danet", "cam", "se", "eca"]
    args = ["-m", "analysis.profile", "--no-measure", "--scopes", "module", "--sizes", "33",
            "65", "--variants", *names, "--out", str(csv)]
    assert _stop_once_written(args, csv, 2, signal.SIGINT, log) == 130  # Ctrl-C
    df = pd.read_csv(csv)
    printed = re.findall(r"^\[profile\] (\w+) module (\d+x\d+): params_m", log.read_text(), re.M)
    assert len(df) >= 2 and len(printed) <= len(df) <= len(printed) + 1 < 12
    assert f"danet profile: stopped; {csv} keeps the {len(df)} rows measured" in log.read_text()
    assert list(zip(df.variant, df["size"]))[: len(printed)] == printed
