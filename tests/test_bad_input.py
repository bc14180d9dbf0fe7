"""Issue 12: every bad input ends in one line that names the file or key and the fix, exit 2,
and nothing already written is lost. One test per case of the issue."""

from __future__ import annotations

import errno
import io
import json
import random
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
import yaml
from PIL import Image

from analysis.collect import check_result
from danet import cli
from danet import config as C
from danet.data import build_dataset
from danet.engine import checkpoint
from danet.engine.train import run
from danet.metrics import ConfusionMatrix
from danet.models.backbone import BACKBONES
from tests.conftest import TINY
from tests.dataset_trees import SIZE, make_tree


def _cli_error(capsys, *argv: str) -> str:
    """Run `danet ARGV`; assert exit 2 and one error line without a traceback; return it.
    (Training's progress bar may come first: tqdm's lines, with their '%|', are not counted.)"""
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith(f"danet {argv[0]}: error: "), err
    return lines[0]


def _train(run_dir: Path, *overrides: str) -> list[str]:
    return ["train", "--run-dir", str(run_dir), *TINY, *overrides]


# --- 1. model.pretrained -------------------------------------------------------------------


def _weights_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(4096))
        return path
    spec = BACKBONES["resnet18" if kind == "wrong-architecture" else "tiny"]
    torch.save(timm.create_model(spec.timm_name, **dict(spec.timm_kwargs)).state_dict(), path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "wrong-architecture",
            ": only 0 of 45 backbone tensors match by name and shape; it is not a tiny checkpoint",
        ),
        ("random-bytes", ": not a readable weights file (UnpicklingError: "),
        ("truncated", ": not a readable weights file (RuntimeError: PytorchStreamReader"),
    ],
)
def test_pretrained_weights_of_another_model_or_corrupt(tmp_path, capsys, kind, message):
    path = _weights_file(tmp_path, kind)
    argv = _train(tmp_path / "r", "model.variant=none", f"model.pretrained={path}")
    line = _cli_error(capsys, *argv)
    assert f"model.pretrained {path}{message}" in line, line
    assert not (tmp_path / "r" / "result.json").exists()


# --- 2. model.variant_opts -----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.variant_opts={reduction: 0}"],
            "variant 'pam': model.variant_opts.reduction must be a positive integer, got 0",
        ),
        (
            ["model.variant_opts={reduction: abc}"],
            "variant 'pam': model.variant_opts.reduction must be an integer, got 'abc'",
        ),
        (
            ["model.variant=ema", "model.variant_opts={bases: 0}"],
            "variant 'ema': model.variant_opts.bases must be a positive integer, got 0",
        ),
        (
            ["model.variant=pam", "model.variant_opts={reduction: -1}"],
            "variant 'pam': model.variant_opts.reduction must be a positive integer, got -1",
        ),
        (
            ["model.variant=se", "model.variant_opts={rd_ratio: -1.0}"],
            "variant 'se': model.variant_opts.rd_ratio must be a positive number, got -1.0",
        ),
    ],
)
def test_variant_option_values_are_checked(tmp_path, capsys, overrides, message):
    line = _cli_error(capsys, *_train(tmp_path / "r", *overrides))
    assert line.endswith(message), line
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_sweep_checks_variant_options_of_every_run_up_front(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "name: g\ngrid:\n  variant:\n"
        "    - {model.variant: pam, model.variant_opts: {reduction: 4}}\n"
        "    - {model.variant: ema, model.variant_opts: {bases: 0}}\n"
    )
    line = _cli_error(capsys, "sweep", str(grid), "--runs-root", str(tmp_path / "runs"))
    assert "grid point" in line and "model.variant_opts.bases must be a positive integer" in line
    assert not (tmp_path / "runs").exists()


# --- 3. a diverging run --------------------------------------------------------------------


def test_diverging_run_is_one_line_and_keeps_its_log(tmp_path, capsys):
    argv = _train(tmp_path / "r", "model.variant=none", "train.lr=1e30", "train.iterations=8")
    line = _cli_error(capsys, *argv)
    assert "loss is nan at iteration" in line and line.endswith("; lower train.lr"), line
    assert not (tmp_path / "r" / "result.json").exists()
    logged = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    assert json.loads(logged[0])["iteration"] == 1  # the steps before it are kept


# --- 3b. learning rates and other numbers out of range (issue 23) --------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-0.1", "'train.lr' must be positive, got -0.1"),  # torch: a traceback
        ("train.lr=nan", "command line: 'train.lr' must be a finite number, got 'nan'"),
        ("train.lr=.inf", "command line: 'train.lr' must be a finite number, got inf"),
        ("train.momentum=1.5", "'train.momentum' must be in [0, 1), got 1.5"),
        ("train.weight_decay=-1e-4", "'train.weight_decay' must be 0 or positive, got -0.0001"),
        ("train.loss_weights=[1, .nan, 1]", "'train.loss_weights' must be a finite number"),
        ("train.loss_weights=[1, -1, 1]", "'train.loss_weights' must be 0 or positive, got"),
        ("eval.scales=[1.0, -0.5]", "'eval.scales' must be positive, got [1.0, -0.5]"),
    ],
)
def test_numbers_out_of_range_are_refused_before_training(tmp_path, capsys, override, message):
    line = _cli_error(capsys, *_train(tmp_path / "r", override))
    assert message in line, line
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_every_float_key_of_a_grid_is_finite(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nconfig:\n  data:\n    scale_range: [0.5, .inf]\n")
    line = _cli_error(capsys, "sweep", str(grid), "--runs-root", str(tmp_path / "runs"))
    assert "'data.scale_range' must be a finite number, got inf" in line, line


# --- 3c. a full disk while a checkpoint is written (issue 23) ------------------------------


# TensorBoard names its event files by second, then by a counter of the process's writers
# ("...9" sorts after "...10"): writers opened here would reorder a later test's resumed run
NO_BOARD = ("train.tensorboard=false",)


class _FullAfter(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)


def test_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes(
    tmp_path, capsys, monkeypatch, tiny_cfg
):
    """torch.save into a file object runs for real, as on a full disk: torch raises its own
    RuntimeError ("unexpected pos") while handling the OSError of the write."""
    real_save, run_dir = torch.save, tmp_path / "r"

    def full_at_iteration_4(obj, f, *args, **kwargs):
        target = _FullAfter(f, room=10_000) if obj.get("iteration") == 4 else f
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_iteration_4)
    argv = _train(run_dir, "model.variant=none", *NO_BOARD)
    line = _cli_error(capsys, *argv)
    assert line.startswith(f"danet train: error: {run_dir}/ckpt/iter_0000004.pt: no space left ")
    assert " free of " in line and "resumes from its last checkpoint" in line, line
    assert not (run_dir / "result.json").exists()
    assert [p.name for p in (run_dir / "ckpt").iterdir()] == ["iter_0000002.pt"]  # no .tmp
    assert checkpoint.load(run_dir / "ckpt" / "iter_0000002.pt")["iteration"] == 2

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the same command finishes
    assert cli.main(argv) == 0
    resumed = json.loads((run_dir / "result.json").read_text())
    straight = run(tiny_cfg("model.variant=none", *NO_BOARD), tmp_path / "s", progress=False)
    for key in ("miou", "pixel_accuracy", "per_class_iou"):  # the same operations: bit for bit
        assert resumed[key] == straight[key], key


def test_full_disk_while_logging_is_one_line(tmp_path, capsys, monkeypatch):
    """log.jsonl's third line finds the disk full: one line naming the log, exit 2."""
    from danet.engine import sinks

    real_init = sinks.Sinks.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        log, lines = self.log, []

        class FullLog:
            name = log.name

            def write(self, text: str) -> int:
                if len(lines) == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                lines.append(text)
                return log.write(text)

            def __getattr__(self, attr: str):  # flush, close
                return getattr(log, attr)

        self.log = FullLog()

    monkeypatch.setattr(sinks.Sinks, "__init__", init)
    line = _cli_error(capsys, *_train(tmp_path / "r", "model.variant=none", *NO_BOARD))
    assert f"{tmp_path / 'r' / 'log.jsonl'}: no space left on its device (" in line, line
    assert len((tmp_path / "r" / "log.jsonl").read_text().splitlines()) == 2


# --- 4. malformed result.json files in danet tables ----------------------------------------


def _result(run_id: str, seed: int) -> dict:
    classes = ["road", "car"]
    metrics = {"miou": 0.5, "pixel_accuracy": 0.9, "per_class_iou": {"road": 0.6, "car": 0.4}}
    return {
        "schema": 1, "run_id": run_id, "variant": "none", "backbone": "tiny",
        "dataset": "synthetic", "setting": "context", "seed": seed, "iterations": 4,
        **metrics, "eval": {"whole": metrics}, "classes": classes, "params": 1000,
        "head_params": 100, "train_time_s": 1.0, "peak_memory_mb": 100.0,
        "config": {"data": {"crop_size": 64}}, "speed": {"amp": "off"},
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"miou": "0.5"}, "'miou' must be a number in [0, 1], got '0.5'"),
        ({"miou": None}, "'miou' must be a number in [0, 1], got None"),
        ({"per_class_iou": ...}, "no 'per_class_iou' field"),  # ...: the field is left out
        ({"speed": "fp32"}, "'speed' must be a mapping or null, got 'fp32'"),
        ({"seed": "s0"}, "'seed' must be an integer, got 's0'"),
        (
            {"per_class_iou": {"road": 0.6, "car": 0.4, "bus": 0.1}},
            "'per_class_iou' has class 'bus', which 'classes' does not list",
        ),
    ],
)
def test_tables_name_each_malformed_result_and_count_it(tmp_path, capsys, change, message):
    runs = tmp_path / "runs" / "sweep"
    for name, seed in (("good", 0), ("bad", 1)):
        (runs / name).mkdir(parents=True)
        result = {**_result(name, seed), **change} if name == "bad" else _result(name, seed)
        result = {k: v for k, v in result.items() if v is not ...}
        (runs / name / "result.json").write_text(json.dumps(result))
    out = tmp_path / "tables"
    assert cli.main(["tables", str(tmp_path / "runs"), "--out", str(out), "--profile", "-"]) == 0
    captured = capsys.readouterr()
    bad = runs / "bad" / "result.json"
    warning = f"danet tables: warning: {bad}: {message}; delete the file to re-run, or fix it"
    assert warning in captured.err.splitlines(), captured.err
    assert "Traceback" not in captured.err
    assert f"tables of 1 run (1 unreadable file skipped: {bad})" in captured.out
    assert pd.read_csv(out / "main.csv")["n"].sum() == 1  # the header and the table agree
    assert (out / "main.md").exists() and bad.exists()  # the bad file is left for the user


def test_what_a_run_writes_passes_the_result_check(tmp_path, tiny_cfg):
    run(tiny_cfg("model.variant=cam"), tmp_path / "r", progress=False)
    assert check_result(json.loads((tmp_path / "r" / "result.json").read_text())) is None


# --- 5. an empty or cut-short config.yaml in a run folder ----------------------------------


def _cut_at_line(text: str) -> str:
    return "".join(text.splitlines(keepends=True)[:20])  # ends in the data section


def _cut_in_value(text: str) -> str:
    return text[: text.index("variant: none") + len("variant: no")]  # YAML reads 'no' as false


@pytest.mark.parametrize(
    "cut, message",
    [
        (lambda text: "", "config.yaml is empty"),
        (_cut_at_line, "config.yaml is truncated (it stops after 'data."),
        (_cut_in_value, "config.yaml is truncated (it stops after 'model.variant')"),
        (
            lambda text: "data:\n  scale_range: [0.9,\n",
            "config.yaml:3:1: not valid YAML (expected the node content, but found '<stream end>'",
        ),
    ],
)
def test_unreadable_run_config_is_said_to_be(tmp_path, capsys, tiny_cfg, cut, message):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    text = cut(yaml.safe_dump(C.to_dict(tiny_cfg("model.variant=none")), sort_keys=False))
    (run_dir / "config.yaml").write_text(text)
    line = _cli_error(capsys, *_train(run_dir, "model.variant=none"))
    assert message in line and line.endswith(
        f"; delete the run folder {run_dir} to start over, or restore the file"
    ), line
    assert (run_dir / "config.yaml").read_text() == text  # left as it was


# --- 6. YAML syntax errors name the line and column ----------------------------------------


def test_yaml_errors_name_line_and_column(tmp_path, capsys):
    f = tmp_path / "x.yaml"
    f.write_text("model:\n  variant: pam\n  head: a: b\n")
    line = _cli_error(capsys, "train", "--config", str(f))
    assert line.endswith(f"{f}:3:10: not valid YAML (mapping values are not allowed here)"), line
    line = _cli_error(capsys, "train", "model.variant_opts={a: [1}")
    assert line.endswith(
        "override 'model.variant_opts={a: [1}': value is not valid YAML at column 26 "
        "(expected ',' or ']', but got '}', while parsing a flow sequence started at column 24)"
    ), line


# --- 7. unreadable checkpoints are warned about --------------------------------------------


def _warnings(run_dir: Path) -> list[str]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r["message"] for r in map(json.loads, lines) if r.get("event") == "warning"]


def test_skipped_checkpoints_are_warned_on_stderr_and_in_the_log(tmp_path, capsys, tiny_cfg):
    cfg, run_dir = tiny_cfg("model.variant=none"), tmp_path / "r"
    run(cfg, run_dir, stop_after=2, progress=False)
    torn = checkpoint.ckpt_dir(run_dir) / "iter_0000003.pt"
    torn.write_bytes(b"torn")
    run(cfg, run_dir, stop_after=3, progress=False)  # resumes from 2, over the torn file
    older = f"{torn}: not a readable checkpoint ("
    assert f"warning: {older}" in capsys.readouterr().err
    assert len(_warnings(run_dir)) == 1 and _warnings(run_dir)[0].startswith(older)
    assert _warnings(run_dir)[0].endswith("; skipped, resuming from iteration 2 instead")

    for path in checkpoint.list_checkpoints(run_dir):
        path.write_bytes(path.read_bytes()[:100])
    assert run(cfg, run_dir, progress=False)["iterations"] == 4
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning: ")]
    assert len(err) == 2 and all("so training restarts from iteration 0" in x for x in err)
    assert ["iter_0000003.pt" in x for x in err] == [True, False]
    assert [f"warning: {m}" for m in _warnings(run_dir)[1:]] == err
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    logged = [r.get("iteration") for r in map(json.loads, lines)]
    assert logged[:3] == [1, 2, None]  # the first attempt's lines are kept
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()  # TensorBoard drops the first attempt's points: each step shows once
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


# --- 8. danet eval --split train -----------------------------------------------------------


def test_eval_on_the_train_split_scores_whole_images(tmp_path, capsys, tiny_cfg):
    run(tiny_cfg("model.variant=none", "data.crop_size=48"), tmp_path / "r", progress=False)
    saved = tmp_path / "pred"
    argv = ["eval", str(tmp_path / "r"), "--split", "train", "--save", str(saved)]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "train"
    pngs = sorted(saved.glob("*.png"))
    assert len(pngs) == 16  # data.train_size
    assert {Image.open(p).size for p in pngs} == {(64, 64)}  # data.image_size, not the crop


def test_eval_transform_on_the_train_split_of_a_downloaded_dataset(tmp_path, tiny_cfg):
    make_tree("cityscapes", tmp_path / "cs")
    cfg = tiny_cfg("data.name=cityscapes", f"data.root={tmp_path / 'cs'}", "data.crop_size=32")
    whole = build_dataset(cfg.data, "train", transform="eval")
    assert [p.parent.parent.name for p, _ in whole.samples] == ["train", "train"]
    image, label = whole[0]
    assert image.shape == (3, *SIZE) and label.shape == SIZE  # not the 32 px training crop
    assert build_dataset(cfg.data, "train")[(0, 0)][1].shape == (32, 32)


# --- 9. the confusion matrix refuses values it would count in the wrong cell ---------------


@pytest.mark.parametrize(
    "pred, target, message",
    [
        ([-1, 0], [1, 0], "a prediction of -1 lies outside [0, 3)"),
        ([3, 0], [1, 0], "a prediction of 3 lies outside [0, 3)"),
        ([0, 0], [3, 255], "a label of 3 lies outside [0, 3) and is not ignore_index 255"),
        ([0, 0], [-1, 0], "a label of -1 lies outside [0, 3) and is not ignore_index 255"),
    ],
)
def test_confusion_matrix_rejects_out_of_range_values(pred, target, message):
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([2, 9]), torch.tensor([2, 255]))  # an ignored pixel never counts
    with pytest.raises(ValueError) as e:
        cm.update(torch.tensor(pred), torch.tensor(target))
    assert str(e.value) == message
    assert cm.mat.sum() == 1 and cm.mat[2, 2] == 1  # nothing of the bad update was counted
