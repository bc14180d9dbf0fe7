"""Downloadable datasets on tiny trees in their exact on-disk layouts (tests/dataset_trees.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from danet.data import build_dataset
from danet.data.classes import CITYSCAPES_TRAIN_IDS, COCO_STUFF
from danet.data.layouts import LAYOUTS
from danet.engine.train import run
from danet.errors import DanetError

from .dataset_trees import NAMES, SBD_ONLY, SIZE, add_sbd, make_tree
from .test_sweep import run_sweep

DATASETS = list(LAYOUTS)
CROP = "data.crop_size=[32,48]"


def expected_ids(name: str, raw: np.ndarray) -> np.ndarray:
    """Training ids from raw label values, written out independently of the loader's tables."""
    raw = raw.astype(np.int64)
    if name == "cityscapes":
        from cityscapesscripts.helpers.labels import id2label

        out = np.vectorize(lambda v: id2label[int(v)].trainId)(raw)
        return np.where((out < 0) | (out >= 19), 255, out)
    if name in ("voc", "pcontext60"):
        return raw
    if name == "camvid":  # SegNet tutorial: 0-10 the classes, 11 void
        return np.where(raw == 11, 255, raw)
    if name in ("ade20k", "pcontext59"):
        return np.where(raw == 0, 255, raw - 1)
    # COCO-Stuff: PNG value = COCO category id - 1; 11 ids are unused, the rest ranked in order
    unused = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}
    used = [v for v in range(182) if v + 1 not in unused]
    rank = {v: i for i, v in enumerate(used)}
    return np.vectorize(lambda v: rank.get(int(v), 255))(raw)


def _cfg(tiny_cfg, name, root, *more):
    return tiny_cfg(f"data.name={name}", f"data.root={root}", CROP, *more)


@pytest.mark.parametrize("name", DATASETS)
def test_fixture_tree_decodes_trains_and_evaluates(name, tmp_path, tiny_cfg):
    root = tmp_path / "data"
    written = make_tree(name, root)
    cfg = _cfg(tiny_cfg, name, root, "data.base_size=56", "data.scale_range=[0.75,2.0]")
    val = build_dataset(cfg.data, "val")
    assert len(val) == 2 and len(val.classes) == len(LAYOUTS[name].classes)
    for i, raw in enumerate(written["val"]):
        image, label = val.load(i)
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(label, expected_ids(name, raw))
    img, lab = build_dataset(cfg.data, "train")[(1, 5)]
    assert img.shape == (3, 32, 48) and lab.shape == (32, 48)

    result = run(cfg, tmp_path / "run", progress=False)
    assert result["dataset"] == name and result["iterations"] == 4
    assert list(result["per_class_iou"]) == list(val.classes)
    assert 0 <= result["miou"] <= 1


def test_class_tables():
    from cityscapesscripts.helpers.labels import labels

    official = {lb.id: lb.trainId for lb in labels if 0 <= lb.trainId < 19}
    assert official == CITYSCAPES_TRAIN_IDS
    lut = LAYOUTS["cityscapes"].lut
    for lb in labels:
        if lb.id >= 0:
            assert lut[lb.id] == official.get(lb.id, 255), lb.name
    assert [len(LAYOUTS[n].classes) for n in DATASETS] == [19, 21, 150, 60, 59, 171, 11]
    assert len(set(COCO_STUFF)) == 171


def test_voc_trainaug_adds_sbd_and_leaves_out_val(tmp_path, tiny_cfg):
    root = tmp_path / "data"
    make_tree("voc", root)
    sbd = add_sbd(root)
    cfg = _cfg(tiny_cfg, "voc", root, "data.train_split=trainaug")
    with pytest.raises(DanetError, match="benchmark_RELEASE"):
        _cfg(tiny_cfg, "voc", tmp_path / "nosbd", "data.train_split=trainaug")
        make_tree("voc", tmp_path / "nosbd")
        build_dataset(
            _cfg(tiny_cfg, "voc", tmp_path / "nosbd", "data.train_split=trainaug").data, "train"
        )
    train = build_dataset(cfg.data, "train")
    ids = [image.stem for image, _ in train.samples]
    # VOC train, then SBD's own images; the VOC val image in SBD's lists is left out
    assert ids == NAMES["voc"]["train"] + SBD_ONLY
    for i in (2, 3):
        np.testing.assert_array_equal(train.load(i)[1], sbd[SBD_ONLY[i - 2]])
    assert train.samples[0][1].suffix == ".png"  # a VOC label map wins over SBD's


def _break(path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not an image")
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "resized":
        Image.fromarray(np.zeros((SIZE[0] + 3, SIZE[1]), np.uint8)).save(path)
    elif how == "rgb":
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(path)


@pytest.mark.parametrize(
    "target, how, message",
    [
        ("image", "garbage", "unreadable"),
        ("image", "truncated", "unreadable"),
        ("label", "garbage", "unreadable"),
        ("label", "resized", "label map is 56x43 but its image"),
        ("label", "rgb", "single-channel"),
        ("label", "missing", "missing .the label map of"),
    ],
)
def test_bad_files_are_named(tmp_path, tiny_cfg, target, how, message):
    root = tmp_path / "data"
    make_tree("ade20k", root)
    cfg = _cfg(tiny_cfg, "ade20k", root)
    image, label = build_dataset(cfg.data, "val").samples[1]
    victim = image if target == "image" else label
    if how == "missing":
        victim.unlink()
    else:
        _break(victim, how)
    with pytest.raises(DanetError, match=message) as err:
        val = build_dataset(cfg.data, "val")
        val.load(1)  # a truncated file passes the header check and fails when decoded
    assert str(victim) in str(err.value) and "\n" not in str(err.value)


def test_missing_tree_is_named(tmp_path, tiny_cfg):
    with pytest.raises(DanetError, match="dataset folder not found; set data.root"):
        build_dataset(_cfg(tiny_cfg, "cityscapes", tmp_path / "nowhere").data, "train")
    (tmp_path / "cs" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DanetError, match=r"gtFine/train: missing \(Cityscapes fine labels\)"):
        build_dataset(_cfg(tiny_cfg, "cityscapes", tmp_path / "cs").data, "train")
    with pytest.raises(DanetError, match="unknown data.train_split of ade20k 'trainaug'"):
        build_dataset(_cfg(tiny_cfg, "ade20k", tmp_path, "data.train_split=trainaug").data, "train")


def test_sweep_marks_the_run_with_corrupt_data_failed(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    make_tree("ade20k", good)
    make_tree("ade20k", bad)
    broken = bad / "ADEChallengeData2016" / "images" / "validation" / "ADE_val_00000002.jpg"
    _break(broken, "garbage")
    config = {
        "data": {"name": "ade20k", "crop_size": [32, 48]},
        "train": {"batch_size": 2, "iterations": 2, "checkpoint_every": 2, "threads": 1},
    }
    grid = tmp_path / "two.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "name": "two",
                "config": config,
                "grid": {"data.root": [str(good), str(bad)]},
                "launcher": {"cluster": "local", "max_parallel": 2, "timeout_min": 10},
            }
        )
    )
    out = run_sweep(tmp_path, grid)
    assert out.returncode == 1, out.stderr
    assert out.stdout.count("FAILED") == 1 and out.stdout.count("  done ") == 1
    failed = next(line for line in out.stdout.splitlines() if "FAILED" in line)
    assert f"{broken}: unreadable" in failed
    # the validation images are checked before training starts, not after hours of it
    runs = {
        yaml.safe_load((d / "config.yaml").read_text())["data"]["root"]: d
        for d in (tmp_path / "runs" / "two").glob("danet-*")
    }
    assert not (runs[str(bad)] / "ckpt").exists() and (runs[str(good)] / "result.json").exists()


def _official_cityscapes_miou(pred_files, gt_files) -> float:
    import copy

    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False  # crashes with numpy >= 2.4 (np.in1d is gone)
    args.JSONOutput = False
    args.quiet = True
    return official.evaluateImgLists(
        [str(p) for p in pred_files], [str(g) for g in gt_files], args
    )["averageScoreClasses"]


def test_miou_matches_official_cityscapes_evaluation(tmp_path, tiny_cfg):
    """Random predictions of every class, scored by both: the confusion matrix agrees."""
    from danet.metrics import ConfusionMatrix

    root = tmp_path / "data"
    make_tree("cityscapes", root, seed=3)
    val = build_dataset(_cfg(tiny_cfg, "cityscapes", root).data, "val")
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(19)
    preds = []
    for i in range(len(val)):
        pred = rng.integers(0, 19, SIZE)
        pred[:4] = 13  # some pixels agree beyond chance
        cm.update(torch.from_numpy(pred), torch.from_numpy(val.load(i)[1].astype(np.int64)))
        path = tmp_path / "pred" / f"{val.name_of(i)}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(val.raw_ids()[pred]).save(path)  # official: labelIds, not trainIds
        preds.append(path)
    official = _official_cityscapes_miou(preds, [gt for _, gt in val.samples])
    assert abs(cm.miou() - official) < 1e-6 and 0.02 < official < 0.5


def test_eval_modes_and_saved_predictions_agree_with_official(tmp_path, tiny_cfg):
    root = tmp_path / "data"
    make_tree("cityscapes", root)
    cfg = _cfg(
        tiny_cfg, "cityscapes", root, "eval.modes=[whole,slide,msflip]", "eval.scales=[0.75,1.0]"
    )
    result = run(cfg, tmp_path / "run", progress=False)
    assert list(result["eval"]) == ["whole", "slide", "msflip"] and result["eval_mode"] == "whole"
    assert result["miou"] == result["eval"]["whole"]["miou"]  # exact: the same number, copied

    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "eval", str(tmp_path / "run"), "--mode", "slide",
         "--save", str(tmp_path / "pred")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    # `danet eval` uses every core, the run train.threads=1: logits differ in the last bits
    # (4.5e-8 measured), which could flip a near-tie pixel; slide and whole differ by 4.9e-4.
    assert metrics["eval_mode"] == "slide"
    assert metrics["miou"] == pytest.approx(result["eval"]["slide"]["miou"], abs=1e-4)
    val = build_dataset(cfg.data, "val")
    preds = [tmp_path / "pred" / f"{val.name_of(i)}.png" for i in range(len(val))]
    official = _official_cityscapes_miou(preds, [gt for _, gt in val.samples])
    assert abs(metrics["miou"] - official) < 1e-6


def test_eval_of_an_official_layout_checkpoint_outside_a_run(tmp_path, tiny_cfg):
    """`danet eval FILE model... data...`: a PyTorch-Encoding-layout file (pretrained.*, head.*,
    wrapped in state_dict with module. prefixes) is evaluated with the config given."""
    from danet.models import Segmentor

    root = tmp_path / "data"
    make_tree("cityscapes", root)
    model = Segmentor(_cfg(tiny_cfg, "cityscapes", root).model, 19)
    renamed = {
        "module."
        + ("pretrained." + k[len("backbone.body.") :] if k.startswith("backbone.") else k): v
        for k, v in model.state_dict().items()
    }
    path = tmp_path / "DANet_official.pth.tar"
    torch.save({"epoch": 240, "state_dict": renamed, "best_pred": 79.93}, path)
    args = [sys.executable, "-m", "danet.cli", "eval", str(path)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "not inside a run folder; give --config" in out.stderr
    more = ["data.name=cityscapes", f"data.root={root}", CROP, "--mode", "flip"]
    out = subprocess.run(args + more, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["layout"] == "pytorch-encoding" and metrics["eval_mode"] == "flip"
    assert 0 <= metrics["miou"] <= 1 and len(metrics["per_class_iou"]) == 19
