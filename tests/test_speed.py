"""Speed options (danet.engine.speed), the built-in scene cache and `danet bench`."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from danet.data import build_dataset, scene_cache, synthetic
from danet.engine import checkpoint
from danet.engine.train import run
from danet.errors import DanetError


def _trained(cfg, folder):
    result = run(cfg, folder, progress=False)
    return result, checkpoint.latest(folder)["model"]


def _losses(folder) -> list[float]:
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


# Options that must not change a deterministic fp32 run: the DataLoader's, and cuDNN's on a
# CPU (where it does not apply). channels_last, compile and amp are measured, not exact.
EXACT = [
    ["data.num_workers=1"],
    ["data.num_workers=2", "data.persistent_workers=false"],
    ["data.pin_memory=false"],
    ["train.cudnn_benchmark=false"],
    ["train.keep_freed_memory=false"],
]


@pytest.mark.parametrize("option", EXACT, ids=lambda o: " ".join(o))
def test_exact_options_keep_a_deterministic_run_bit_identical(tiny_cfg, tmp_path, option):
    base = tiny_cfg("model.variant=danet")  # dropout and augmentation both draw numbers
    a, wa = _trained(base, tmp_path / "default")
    b, wb = _trained(tiny_cfg("model.variant=danet", *option), tmp_path / "option")
    # exact: one CPU, train.threads=1 and the same samples (workers only fetch them), so the
    # same kernels run in the same order
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["miou"] == b["miou"] and a["per_class_iou"] == b["per_class_iou"]
    assert _losses(tmp_path / "default") == _losses(tmp_path / "option")


def test_inexact_options_train_and_are_recorded(tiny_cfg, tmp_path):
    """channels_last and bf16 autocast change the numbers a little (the size is measured by
    danet bench and experiments/speed_options.yaml); they train, evaluate and resume."""
    _trained(tiny_cfg("model.variant=danet"), tmp_path / "fp32")
    cfg = tiny_cfg("model.variant=danet", "train.channels_last=true", "train.amp=bf16")
    assert run(cfg, tmp_path / "fast", stop_after=2, progress=False) is None
    result, weights = _trained(cfg, tmp_path / "fast")
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    assert 0 <= result["miou"] <= 1
    first, fast = _losses(tmp_path / "fp32")[0], _losses(tmp_path / "fast")[0]
    assert fast != first and fast == pytest.approx(first, rel=0.02)  # bf16: 8 mantissa bits
    assert result["speed"] == {
        "channels_last": True,
        "amp": "bf16",
        "compile": False,
        "cudnn_benchmark": False,  # on a CPU it does not apply
        "keep_freed_memory": True,  # glibc (Linux)
        "num_workers": 0,
        "pin_memory": False,
        "persistent_workers": False,
    }


def test_compiled_model_trains_to_nearly_the_same_numbers(tiny_cfg, tmp_path):
    _, wa = _trained(tiny_cfg("model.variant=pam"), tmp_path / "eager")
    result, wb = _trained(tiny_cfg("model.variant=pam", "train.compile=true"), tmp_path / "c")
    assert result["speed"]["compile"] is True
    assert set(wa) == set(wb)  # checkpoints keep the plain module's names
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "c")
    assert compiled[0] == pytest.approx(eager[0], rel=1e-4)


def test_option_errors(tiny_cfg, tmp_path):
    with pytest.raises(DanetError, match="'train.amp' is fp16, which needs a CUDA device"):
        run(tiny_cfg("train.amp=fp16", "train.device=cpu"), tmp_path / "a", progress=False)
    with pytest.raises(DanetError, match="train.amp.*bf16"):
        run(tiny_cfg("train.amp=half"), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_with_grad_scaler_on_cuda(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.amp=fp16", "train.device=cuda", "train.channels_last=true")
    assert run(cfg, tmp_path / "r", stop_after=2, progress=False) is None
    state = checkpoint.latest(tmp_path / "r")
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    result = run(cfg, tmp_path / "r", progress=False)
    assert result["speed"]["amp"] == "fp16" and result["speed"]["pin_memory"] is True


# ---------------------------------------------------------------- scene cache


def test_scene_cache_holds_exactly_the_generated_scenes(tiny_cfg):
    cfg = tiny_cfg().data
    ds = build_dataset(cfg, "train", 0)
    assert ds.scenes is not None
    for i in range(cfg.train_size):
        image, label = synthetic.generate(i, "train", cfg.setting, cfg.image_size, cfg.data_seed)
        cached_image, cached_label = ds.scene(i)
        assert np.array_equal(image, cached_image) and np.array_equal(label, cached_label)


def test_scene_cache_recovers_from_bad_files_and_unwritable_folders(tmp_path, monkeypatch):
    monkeypatch.setenv(scene_cache.ENV, str(tmp_path / "cache"))
    first = scene_cache.scenes("val", "context", 32, 0, 3)
    path = tmp_path / "cache" / "synthetic" / "val-context-32px-seed0-3.npy"
    assert first is not None and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    expected = np.array(first)
    path.write_bytes(path.read_bytes()[:100])  # torn by a crash
    assert np.array_equal(scene_cache.scenes("val", "context", 32, 0, 3), expected)
    # an unwritable cache folder: scenes are generated on the fly instead
    monkeypatch.setenv(scene_cache.ENV, "/proc/danet-cache")
    assert scene_cache.scenes("val", "context", 32, 0, 3) is None
    monkeypatch.setattr(scene_cache, "MAX_BYTES", 10)
    monkeypatch.setenv(scene_cache.ENV, str(tmp_path / "cache"))
    assert scene_cache.scenes("val", "context", 32, 0, 3) is None  # too big to cache


# ---------------------------------------------------------------- danet bench


def test_bench_measures_every_section(tmp_path, capsys):
    from analysis import bench

    out = tmp_path / "bench.csv"
    code = bench.main(
        [
            "--quick", "--settings", "default", "--variants", "none+dual,none,danet",
            "--options", "channels_last,workers_1,pin_memory_off", "--out", str(out),
        ]
    )
    assert code == 0
    df = pd.read_csv(out)
    assert set(df.section) == {"ceiling", "train", "inference", "option", "data", "check"}
    # each row printed on stderr as it was measured (tests/test_progress.py: and kept)
    printed = re.findall(r"^\[bench\] default (\w+): ", capsys.readouterr().err, re.M)
    assert printed == list(df.section)
    ceiling = df[df.section == "ceiling"]
    assert set(ceiling.dtype) >= {"fp32"} and (ceiling.gflops > 0).all()
    assert set(ceiling.impl) == (
        {"torch.mm"} if torch.cuda.is_available() else {"torch.mm", "oneDNN"}
    )
    train = df[df.section == "train"].set_index("variant")
    assert list(train.index) == ["none+dual", "none", "danet"]
    assert (train.images_per_s > 0).all() and (train.fraction_of_fp32 > 0).all()
    # achieved = 3 x forward FLOPs / step, the forward FLOPs as danet profile counts them
    expected = 3 * train.forward_gflops / (train.step_ms / 1e3)
    assert np.allclose(train.achieved_gflops, expected)
    assert train.forward_gflops["danet"] > train.forward_gflops["none+dual"]
    inference = df[df.section == "inference"]
    assert set(zip(inference.variant, inference["mode"])) == {
        (v, m) for v in ("none", "danet") for m in ("whole", "slide")
    }
    options = df[df.section == "option"].set_index("name")
    assert bool(options.exact["workers_1"]) is True  # the same losses step by step
    # channels_last picks other kernels: bit-identical losses on some CPUs (this Intel Xeon),
    # not on others (an AMD EPYC); either way `exact` says which, and the losses stay close
    channels_last = options.loc["channels_last"]
    assert bool(channels_last.exact) == bool(channels_last.loss_rel_diff == 0)
    assert channels_last.loss_rel_diff < 1e-3  # fp32 sums in another order, a few steps
    assert options.value["channels_last"] > 0
    if not torch.cuda.is_available():
        assert options.note["pin_memory_off"] == "needs a CUDA device"
    data = df[df.section == "data"].iloc[0]
    assert bool(data.exact) is True and data.value > 0
    checks = set(df[df.section == "check"].name)
    assert checks == {"attention_overhead", "data_loading"}
    text = out.with_suffix(".md").read_text()
    for title in ("Dense matmul ceiling", "Training step", "Inference", "Speed options"):
        assert title in text


def test_bench_rejects_unknown_names(tmp_path, capsys):
    from analysis import bench

    assert bench.main(["--variants", "danet,dnaet", "--out", str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert "--variants" in err and "dnaet" in err and "danet" in err
    assert not os.path.exists(tmp_path / "b.csv")


def test_bench_takes_plugins(tmp_path, capsys, clean_registries):
    from analysis import bench

    example = Path(__file__).parent.parent / "experiments" / "plugin_example" / "my_attention.py"
    out = str(tmp_path / "b.csv")
    assert bench.main(["--plugins", str(example), "--variants", "gatee", "--out", out]) == 2
    assert "did you mean 'gate'" in capsys.readouterr().err  # the plugin's variant is known
    assert bench.main(["--plugins", str(tmp_path / "nope.py"), "--out", out]) == 2
    assert "nope.py: file not found" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_fp16_is_refused_at_run_time_where_auto_finds_no_gpu(tiny_cfg, tmp_path):
    """A sweep checks every run where it is submitted (a login node may have no GPU), so
    `auto` passes there; the run itself refuses fp16 before writing anything on a CPU."""
    from danet.checks import check_config

    cfg = tiny_cfg("train.amp=fp16")  # train.device=auto
    check_config(cfg)
    if not torch.cuda.is_available():
        with pytest.raises(DanetError, match="needs a CUDA device"):
            run(cfg, tmp_path / "r", progress=False)
        assert not (tmp_path / "r").exists()
