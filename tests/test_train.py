import json
import os

import pytest
import torch

from danet.engine import checkpoint
from danet.engine.train import run
from danet.errors import DanetError
from danet.models import Segmentor


def _weights(run_dir):
    return checkpoint.latest(run_dir)["model"]


def test_resume_gives_the_same_weights_and_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model.variant=danet")  # dropout and augmentation both draw random numbers
    straight = run(cfg, tmp_path / "straight", progress=False)
    assert run(cfg, tmp_path / "resumed", stop_after=2, progress=False) is None
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = run(cfg, tmp_path / "resumed", progress=False)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    # exact: one process, train.threads=1, so the same kernels in the same order
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["miou"] == straight["miou"]
    assert resumed["per_class_iou"] == straight["per_class_iou"]
    events = [
        json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    ]
    assert {"event": "resume", "iteration": 2} in events


def test_result_json_fields(tiny_cfg, tmp_path):
    result = run(tiny_cfg("model.variant=pam"), tmp_path / "r", progress=False)
    on_disk = json.loads((tmp_path / "r" / "result.json").read_text())
    assert on_disk == result
    for key in (
        "schema",
        "config",
        "run_id",
        "variant",
        "backbone",
        "dataset",
        "seed",
        "iterations",
        "miou",
        "per_class_iou",
        "pixel_accuracy",
        "params",
        "train_time_s",
        "cost",
        "versions",
        "git",
        "device",
    ):
        assert key in result, key
    assert result["schema"] == 1 and result["variant"] == "pam" and result["iterations"] == 4
    assert result["head"] == "single" and result["branches"] == ["pam"]
    assert set(result["versions"]) >= {"torch", "timm", "numpy"}
    assert set(result["git"]) == {"commit", "dirty"}
    assert len(result["per_class_iou"]) == 8


def test_done_run_is_not_trained_again(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("model.variant=none")
    first = run(cfg, tmp_path / "r", progress=False)
    monkeypatch.setattr(Segmentor, "forward", lambda *a: pytest.fail("trained a finished run"))
    assert run(cfg, tmp_path / "r", progress=False) == first


def test_crash_keeps_checkpoint_and_log_then_resumes(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("model.variant=cam")
    calls = {"n": 0}
    real_forward = Segmentor.forward

    def failing_forward(self, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash in iteration 3")
        return real_forward(self, x)

    monkeypatch.setattr(Segmentor, "forward", failing_forward)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, tmp_path / "r", progress=False)
    saved = checkpoint.list_checkpoints(tmp_path / "r")
    assert [p.name for p in saved] == ["iter_0000002.pt"]
    assert checkpoint.load(saved[0])["iteration"] == 2
    lines = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    assert not (tmp_path / "r" / "result.json").exists()
    monkeypatch.setattr(Segmentor, "forward", real_forward)
    assert run(cfg, tmp_path / "r", progress=False)["iterations"] == 4


def test_torn_newest_checkpoint_falls_back(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model.variant=none")
    run(cfg, tmp_path / "r", stop_after=2, progress=False)
    (tmp_path / "r" / "ckpt" / "iter_0000003.pt").write_bytes(b"torn")
    assert checkpoint.latest(tmp_path / "r")["iteration"] == 2
    with pytest.raises(DanetError, match="iter_0000003.pt: not a readable checkpoint"):
        checkpoint.load(tmp_path / "r" / "ckpt" / "iter_0000003.pt")


def test_run_dir_with_another_config_is_refused(tiny_cfg, tmp_path):
    run(tiny_cfg("model.variant=none"), tmp_path / "r", stop_after=2, progress=False)
    with pytest.raises(DanetError, match="config.yaml holds a different config"):
        run(tiny_cfg("model.variant=pam"), tmp_path / "r", progress=False)


def test_checkpoints_keep_the_newest_two(tiny_cfg, tmp_path):
    run(tiny_cfg("train.iterations=6", "train.checkpoint_every=1"), tmp_path / "r", progress=False)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "r")] == [
        "iter_0000005.pt",
        "iter_0000006.pt",
    ]


def test_written_files_follow_the_umask(tiny_cfg, tmp_path):
    old = os.umask(0o022)
    try:
        run(tiny_cfg("model.variant=none"), tmp_path / "r", progress=False)
    finally:
        os.umask(old)
    for name in ("result.json", "config.yaml", "ckpt/iter_0000004.pt"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o044 == 0o044, name


def test_eval_command_reproduces_the_result(tiny_cfg, tmp_path):
    import subprocess
    import sys

    result = run(tiny_cfg("model.variant=cam"), tmp_path / "r", progress=False)
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "eval", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    # `danet eval` uses every core, the run train.threads=1: logits differ in the last bits
    # (3e-7 measured), which could flip a near-tie pixel.
    assert metrics["iteration"] == 4 and metrics["miou"] == pytest.approx(result["miou"], abs=1e-4)


def test_tensorboard_events_follow_the_run_and_its_resume(tiny_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tiny_cfg("model.variant=pam"), tmp_path / "r", stop_after=2, progress=False)
    run(tiny_cfg("model.variant=pam"), tmp_path / "r", progress=False)
    events = EventAccumulator(str(tmp_path / "r" / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "train/images_per_s", "val/miou_whole",
                "hparam/miou_whole", "hparam/gmacs", "hparam/train_peak_mb"):
        assert tag in tags, tag
    # one point per logged iteration: the resumed run does not repeat steps 1-2
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    final = [x["miou"] for x in log if x.get("event") == "eval"][0]
    assert events.Scalars("val/miou_whole")[0].value == pytest.approx(100 * final)  # percent
    assert events.Scalars("hparam/miou_whole")[0].value == pytest.approx(100 * final)
    hparams = (tmp_path / "r" / "tb").glob("events.out.tfevents.*")
    assert any(b"model.variant" in p.read_bytes() for p in hparams)  # the config, for HPARAMS


@pytest.mark.parametrize("tensorboard", [True, False])
def test_every_sink_setting_marks_the_run_done(tiny_cfg, tmp_path, tensorboard):
    cfg = tiny_cfg("model.variant=none", f"train.tensorboard={str(tensorboard).lower()}")
    result = run(cfg, tmp_path / "r", progress=False)
    assert json.loads((tmp_path / "r" / "result.json").read_text()) == result
    assert (tmp_path / "r" / "tb").exists() == tensorboard
    # done: a second call trains nothing and returns the stored result
    lines = (tmp_path / "r" / "log.jsonl").read_text()
    assert run(cfg, tmp_path / "r", progress=False) == result
    assert (tmp_path / "r" / "log.jsonl").read_text() == lines


def test_a_finished_run_refuses_another_config(tiny_cfg, tmp_path):
    run(tiny_cfg("model.variant=none"), tmp_path / "r", progress=False)
    with pytest.raises(DanetError, match="holds a different config"):
        run(tiny_cfg("model.variant=none", "train.lr=0.02"), tmp_path / "r", progress=False)


def test_a_second_trainer_of_the_same_folder_is_refused(tiny_cfg, tmp_path):
    """Two processes on one run folder would delete each other's checkpoint temporaries."""
    from danet.engine import run_lock

    with run_lock.exclusive(tmp_path / "r"):
        with pytest.raises(DanetError, match=rf"is being trained by process {os.getpid()}"):
            run(tiny_cfg("model.variant=none"), tmp_path / "r", progress=False)
        assert not (tmp_path / "r" / "config.yaml").exists()  # refused before writing anything
    assert run(tiny_cfg("model.variant=none"), tmp_path / "r", progress=False)["miou"] >= 0
