"""CamVid (the SegNet tutorial's 11-class layout) and data.name=folder (images, label maps and
a class list of one's own) on tiny trees (tests/dataset_trees.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from danet.data import build_dataset, num_classes
from danet.data.classes import CAMVID
from danet.engine.train import run
from danet.errors import DanetError

from .dataset_trees import (
    CAMVID_NAMES,
    FOLDER_CLASSES,
    SIZE,
    make_camvid,
    make_folder,
)

CROP = "data.crop_size=[32,48]"


def _cfg(tiny_cfg, name, root, *more):
    return tiny_cfg(f"data.name={name}", f"data.root={root}", CROP, *more)


def _one_line_error(cfg, split="val", index=None) -> str:
    """The DanetError of building a split (and decoding one item); it is one line."""
    with pytest.raises(DanetError) as err:
        dataset = build_dataset(cfg.data, split)
        for i in range(len(dataset)) if index is None else [index]:
            dataset.load(i)
    assert "\n" not in str(err.value)
    return str(err.value)


# ---------------------------------------------------------------- CamVid


def test_camvid_decodes_and_reads_the_test_split(tmp_path, tiny_cfg):
    root = tmp_path / "CamVid"
    written = make_camvid(root)
    cfg = _cfg(tiny_cfg, "camvid", root)
    val = build_dataset(cfg.data, "val")
    assert val.classes == CAMVID and len(CAMVID) == 11 and CAMVID[0] == "Sky"
    assert [p.stem for p, _ in val.samples] == CAMVID_NAMES["val"]
    for i, raw in enumerate(written["val"]):
        image, label = val.load(i)
        assert image.shape == (*SIZE, 3)
        assert (raw == 11).any() and (raw == 10).any()
        np.testing.assert_array_equal(label, np.where(raw == 11, 255, raw))  # 11: void
    test = build_dataset(_cfg(tiny_cfg, "camvid", root, "data.val_split=test").data, "val")
    assert len(test) == 1
    # the tiny training run: tests/test_datasets.py, test_fixture_tree_decodes_trains_and_...


def test_camvid_bad_trees_are_one_line_errors(tmp_path, tiny_cfg):
    root = tmp_path / "CamVid"
    make_camvid(root)
    cfg = _cfg(tiny_cfg, "camvid", root)
    message = _one_line_error(_cfg(tiny_cfg, "camvid", root, "data.val_split=trainval"))
    assert "unknown data.val_split of camvid 'trainval'" in message
    label = root / "valannot" / f"{CAMVID_NAMES['val'][1]}.png"

    Image.fromarray(np.full(SIZE, 12, np.uint8)).save(label)  # a value out of range
    message = _one_line_error(cfg, index=1)
    assert message.startswith(f"{label}: label value 12 is not valid; CamVid label maps hold")

    Image.fromarray(np.zeros((SIZE[0] + 3, SIZE[1]), np.uint8)).save(label)
    assert f"{label}: label map is 56x43 but its image" in _one_line_error(cfg)

    label.unlink()  # an image without its label map
    assert _one_line_error(cfg).startswith(f"{label}: missing (the label map of ")

    for path in (root / "valannot").iterdir():
        path.unlink()
    (root / "valannot").rmdir()
    assert _one_line_error(cfg).startswith(f"{root / 'valannot'}: missing (CamVid label maps)")
    assert "dataset folder not found" in _one_line_error(
        _cfg(tiny_cfg, "camvid", tmp_path / "nowhere")
    )


# ---------------------------------------------------------------- folder


@pytest.mark.parametrize("kind", ["indices", "rgb", "id_map"])
def test_folder_decodes_each_label_encoding(tmp_path, tiny_cfg, kind):
    root = tmp_path / "mine"
    id_map = {7: 0, 8: 1, 11: 2, 3: 255} if kind == "id_map" else None
    written = make_folder(root, rgb=kind == "rgb", id_map=id_map)
    cfg = _cfg(tiny_cfg, "folder", root)
    assert num_classes(cfg.data) == 3
    val = build_dataset(cfg.data, "val")
    assert val.classes == tuple(FOLDER_CLASSES)
    assert [p.name for p, _ in val.samples] == ["val_a.png", "val_b.jpg"]
    for i, ids in enumerate(written["val"]):
        image, label = val.load(i)
        assert image.shape == (*SIZE, 3)
        assert (ids == 255).any()
        np.testing.assert_array_equal(label, ids)
    if kind == "id_map":  # predictions are saved in the maps' own ids
        assert list(val.raw_ids()[:3]) == [7, 8, 11]


def test_folder_trains_and_takes_its_ignore_index(tmp_path, tiny_cfg):
    root = tmp_path / "mine"
    make_folder(root)
    result = run(_cfg(tiny_cfg, "folder", root), tmp_path / "run", progress=False)
    assert result["dataset"] == "folder" and list(result["per_class_iou"]) == FOLDER_CLASSES

    # labels 0-2 with 3 for unlabelled: data.ignore_index=3
    label = root / "labels" / "val" / "val_a.png"
    raw = np.array(Image.open(label))
    Image.fromarray(np.where(raw == 255, 3, raw).astype(np.uint8)).save(label)
    message = _one_line_error(_cfg(tiny_cfg, "folder", root), index=0)
    assert message.startswith(f"{label}: label value 3 is not valid; ")
    assert "lists 3 classes (0-2); data.ignore_index is 255" in message
    val = build_dataset(_cfg(tiny_cfg, "folder", root, "data.ignore_index=3").data, "val")
    np.testing.assert_array_equal(val.load(0)[1], np.where(raw == 255, 255, raw))


def _edit(root, how: str) -> str:
    """Break a good tree one way; return the text the one-line error must contain."""
    images, labels = root / "images" / "val", root / "labels" / "val"
    if how == "no labels folder":
        for p in labels.iterdir():
            p.unlink()
        labels.rmdir()
        return f"{labels}: missing (labels of split 'val': "
    if how == "image without label":
        (labels / "val_b.png").unlink()
        return f"{images / 'val_b.jpg'}: no label map of the same stem in {labels} (1 of 2 files"
    if how == "label without image":
        (labels / "val_c.png").write_bytes((labels / "val_a.png").read_bytes())
        return f"{labels / 'val_c.png'}: no image of the same stem in {images} (1 of 3 files"
    if how == "empty split":
        for p in images.iterdir():
            p.unlink()
        return f"{images}: no images (.png, .jpg, .jpeg) for split 'val'"
    if how == "bad class line":
        (root / "classes.txt").write_text("background\nroad 128 64\n")
        return f"{root / 'classes.txt'}:2: bad class line 'road 128 64'"
    if how == "half the classes coloured":
        (root / "classes.txt").write_text("background\nroad 128 64 128\n")
        return f"{root / 'classes.txt'}:2: 'road 128 64 128': give every class a colour"
    if how == "repeated class":
        (root / "classes.txt").write_text("background\nroad\nroad\n")
        return f"{root / 'classes.txt'}:3: class 'road' is listed twice"
    if how == "no class list":
        (root / "classes.txt").unlink()
        return f"{root / 'classes.txt'}: missing (the class list"
    if how == "size mismatch":
        Image.fromarray(np.zeros((SIZE[0] + 3, SIZE[1]), np.uint8)).save(labels / "val_b.png")
        return f"{labels / 'val_b.png'}: label map is 56x43 but its image"
    if how == "value out of range":
        Image.fromarray(np.full(SIZE, 7, np.uint8)).save(labels / "val_b.png")
        return f"{labels / 'val_b.png'}: label value 7 is not valid; "
    if how == "rgb label, no colours":
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(labels / "val_b.png")
        return "label maps must be single-channel (mode L or P), got RGB"
    if how == "bad id map line":
        (root / "id_map.txt").write_text("7 0\n8 3\n")
        return f"{root / 'id_map.txt'}:2: bad line '8 3'; write 'raw_id class_index'"
    if how == "id not in the id map":
        (root / "id_map.txt").write_text("1 0\n2 1\n")
        return "is not valid; not in " + str(root / "id_map.txt")
    raise AssertionError(how)


CASES = [
    "no labels folder", "image without label", "label without image", "empty split",
    "bad class line", "half the classes coloured", "repeated class", "no class list",
    "size mismatch", "value out of range", "rgb label, no colours", "bad id map line",
    "id not in the id map",
]


@pytest.mark.parametrize("how", CASES)
def test_folder_bad_trees_are_one_line_errors(tmp_path, tiny_cfg, how):
    root = tmp_path / "mine"
    make_folder(root)
    expected = _edit(root, how)
    assert expected in _one_line_error(_cfg(tiny_cfg, "folder", root))


def test_folder_rgb_maps_name_an_unknown_colour(tmp_path, tiny_cfg):
    root = tmp_path / "mine"
    make_folder(root, rgb=True)
    label = root / "labels" / "val" / "val_b.png"
    rgb = np.array(Image.open(label))
    rgb[5, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(label)
    message = _one_line_error(_cfg(tiny_cfg, "folder", root))
    assert message.startswith(f"{label}: colour (1, 2, 3) is in no line of classes.txt (1 pixels)")
    Image.fromarray(rgb[..., 0]).save(label)
    assert "is mode L, but the class list gives colours" in _one_line_error(
        _cfg(tiny_cfg, "folder", root)
    )
    (root / "id_map.txt").write_text("1 0\n")
    assert "an id map applies to single-channel label maps" in _one_line_error(
        _cfg(tiny_cfg, "folder", root)
    )


def test_folder_ignore_index_must_not_be_a_class(tmp_path, tiny_cfg):
    root = tmp_path / "mine"
    make_folder(root)
    message = _one_line_error(_cfg(tiny_cfg, "folder", root, "data.ignore_index=2"))
    assert message.startswith("data.ignore_index 2 must be a label value that is not a class")
    assert "3-255 for the 3 classes of" in message
    with pytest.raises(DanetError, match="'data.ignore_index' must be 0-255, got 300"):
        build_dataset(_cfg(tiny_cfg, "folder", root, "data.ignore_index=300").data, "val")


def test_folder_error_through_the_cli_is_one_line_and_exit_2(tmp_path):
    root = tmp_path / "mine"
    make_folder(root)
    (root / "labels" / "train" / "train_b.png").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "train", "data.name=folder", f"data.root={root}",
         "train.iterations=2", "train.threads=1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("danet train: error: ")
    assert f"{root}/images/train/train_b.jpg: no label map of the same stem" in lines[0]


def test_checking_a_large_tree_shows_its_progress(tmp_path, tiny_cfg, monkeypatch, capsys):
    from danet.data import files

    make_folder(tmp_path / "mine")
    cfg = _cfg(tiny_cfg, "folder", tmp_path / "mine")
    build_dataset(cfg.data, "val")
    assert "checking" not in capsys.readouterr().err  # a small tree: silent
    monkeypatch.setattr(files, "LARGE_TREE", 2)  # as if it had thousands of files
    build_dataset(cfg.data, "val")
    assert "checking val files: 100%" in capsys.readouterr().err
