"""Tiny dataset trees in the exact on-disk layouts of the downloads (danet.data.layouts):
real folder and file names, formats and label encodings, synthetic pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 56)  # (height, width): small, not a multiple of the stride-8 grid

# Raw label values each layout stores (including values that must become ignore).
RAW_VALUES = {
    "cityscapes": np.arange(0, 34),  # labelIds; 0-6, 9, 10, ... are ignored
    "voc": np.r_[np.arange(21), 255],  # 255: VOC's object boundaries
    "ade20k": np.arange(0, 151),  # 0: 'other', ignored
    "pcontext60": np.arange(0, 60),
    "pcontext59": np.arange(0, 60),
    "cocostuff": np.r_[np.arange(182), 255],  # category id - 1; 255 unlabelled
}

NAMES = {
    "cityscapes": {"train": ["aachen_000000_000019", "aachen_000001_000019"],
                   "val": ["frankfurt_000000_000294", "frankfurt_000000_000576"]},
    "voc": {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042"]},
    "ade20k": {"train": ["ADE_train_00000001", "ADE_train_00000002"],
               "val": ["ADE_val_00000001", "ADE_val_00000002"]},
    "pcontext60": {"train": ["2008_000002", "2008_000003"], "val": ["2008_000007", "2008_000008"]},
    "cocostuff": {"train": ["000000000009", "000000000025"],
                  "val": ["000000000139", "000000000285"]},
}
NAMES["pcontext59"] = NAMES["pcontext60"]
SBD_ONLY = ["2008_000045", "2008_000051"]  # in SBD's train/val lists, without a VOC label map


def _image(path: Path, rng: np.random.Generator, size=SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _label(path: Path, raw: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(raw)
    if palette:  # VOC's SegmentationClass PNGs are palette images storing class indices
        im.putpalette(np.random.default_rng(1).integers(0, 256, 768, dtype=np.uint8).tobytes())
        assert im.mode == "P"
    im.save(path)


def _raw(name: str, rng: np.random.Generator, size=SIZE) -> np.ndarray:
    return rng.choice(RAW_VALUES[name], size=size).astype(np.uint8)


def make_tree(name: str, root: Path, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Write a two-image train and val split of `name` under root; return the raw label
    maps written, per split, in the order the loader lists them (sorted ids)."""
    if name == "camvid":
        return make_camvid(root, seed)
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for split, ids in NAMES[name].items():
        written[split] = []
        for i in ids:
            raw = _raw(name, rng)
            written[split].append(raw)
            if name == "cityscapes":
                city = i.split("_")[0]
                _image(root / "leftImg8bit" / split / city / f"{i}_leftImg8bit.png", rng)
                gt = root / "gtFine" / split / city
                _label(gt / f"{i}_gtFine_labelIds.png", raw)
                _label(gt / f"{i}_gtFine_instanceIds.png", raw)  # present in the download
            elif name == "voc":
                voc = root / "VOCdevkit" / "VOC2012"
                _image(voc / "JPEGImages" / f"{i}.jpg", rng)
                _label(voc / "SegmentationClass" / f"{i}.png", raw, palette=True)
            elif name == "ade20k":
                part = {"train": "training", "val": "validation"}[split]
                base = root / "ADEChallengeData2016"
                _image(base / "images" / part / f"{i}.jpg", rng)
                _label(base / "annotations" / part / f"{i}.png", raw)
            elif name.startswith("pcontext"):
                voc = root / "VOCdevkit" / "VOC2010"
                _image(voc / "JPEGImages" / f"{i}.jpg", rng)
                _label(voc / "SegmentationClassContext" / f"{i}.png", raw)
            elif name == "cocostuff":
                _image(root / "images" / f"{split}2017" / f"{i}.jpg", rng)
                _label(root / "annotations" / f"{split}2017" / f"{i}.png", raw)
    if name == "voc":
        sets = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True)
        train, val = NAMES[name]["train"], NAMES[name]["val"]
        for split, ids in (("train", train), ("val", val), ("trainval", train + val)):
            (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    if name.startswith("pcontext"):
        sets = root / "VOCdevkit" / "VOC2010" / "ImageSets" / "SegmentationContext"
        sets.mkdir(parents=True)
        for split, ids in NAMES[name].items():
            (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return written


def add_sbd(root: Path, seed: int = 1) -> dict[str, np.ndarray]:
    """SBD (benchmark_RELEASE) next to a VOC tree: .mat labels for two images that have no
    VOC label map, one VOC train image and one VOC val image (which trainaug must drop)."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    written = {}
    for i in SBD_ONLY + [NAMES["voc"]["train"][0], NAMES["voc"]["val"][0]]:
        raw = rng.integers(0, 21, SIZE, dtype=np.uint8)  # SBD has no 255 boundaries
        written[i] = raw
        if i in SBD_ONLY:
            _image(voc / "JPEGImages" / f"{i}.jpg", rng)
        (sbd / "cls").mkdir(parents=True, exist_ok=True)
        savemat(
            sbd / "cls" / f"{i}.mat",
            {"GTcls": {"Segmentation": raw, "CategoriesPresent": np.unique(raw)}},
        )
    (sbd / "train.txt").write_text(f"{SBD_ONLY[0]}\n{NAMES['voc']['train'][0]}\n")
    (sbd / "val.txt").write_text(f"{SBD_ONLY[1]}\n{NAMES['voc']['val'][0]}\n")
    return written


CAMVID_NAMES = {
    "train": ["0001TP_006690", "0001TP_006720"],
    "val": ["0016E5_07959", "0016E5_07961"],
    "test": ["0001TP_008550"],
}


def make_camvid(root: Path, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The SegNet tutorial's CamVid/ layout: {split}/*.png RGB images and {split}annot/*.png
    single-channel maps of 0-10 (classes) and 11 (void), of the same file name."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for split, ids in CAMVID_NAMES.items():
        written[split] = []
        for i in ids:
            raw = rng.integers(0, 12, SIZE, dtype=np.uint8)
            written[split].append(raw)
            _image(root / split / f"{i}.png", rng)
            _label(root / f"{split}annot" / f"{i}.png", raw)
        (root / f"{split}.txt").write_text(  # the tutorial's lists (absolute paths; unread)
            "".join(f"/SegNet/CamVid/{split}/{i}.png /SegNet/CamVid/{split}annot/{i}.png\n"
                    for i in ids)
        )
    return written


FOLDER_CLASSES = ["background", "road", "traffic light"]
FOLDER_COLOURS = [(0, 0, 0), (128, 64, 128), (250, 170, 30)]


def make_folder(
    root: Path, seed: int = 0, rgb: bool = False, id_map: dict[int, int] | None = None
) -> dict[str, list[np.ndarray]]:
    """data.name=folder: images/<split>/ (png and jpg), labels/<split>/*.png and classes.txt.
    Single-channel maps hold class indices and 255 (ignore), or with id_map its raw ids; rgb:
    maps of the colours in classes.txt (and an 'ignore' colour). Returns the training ids."""
    rng = np.random.default_rng(seed)
    lines = ["# name [r g b]"]
    for name, colour in zip(FOLDER_CLASSES, FOLDER_COLOURS):
        lines.append(f"{name} {' '.join(map(str, colour))}" if rgb else name)
    if rgb:
        lines.append("ignore 255 255 255")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(lines) + "\n\n")
    if id_map:
        (root / "id_map.txt").write_text("".join(f"{r} {c}\n" for r, c in id_map.items()))
    written: dict[str, list[np.ndarray]] = {}
    for split in ("train", "val"):
        written[split] = []
        for k, stem in enumerate([f"{split}_a", f"{split}_b"]):
            ids = rng.choice(np.r_[np.arange(len(FOLDER_CLASSES)), 255], size=SIZE).astype(np.uint8)
            written[split].append(ids)
            _image(root / "images" / split / f"{stem}.{'jpg' if k else 'png'}", rng)
            if rgb:
                table = np.array([*FOLDER_COLOURS] + [(255, 255, 255)] * 253, np.uint8)
                label = table[ids]
            elif id_map:
                inverse = np.full(256, 255, np.uint8)  # training id -> a raw id mapped to it
                for raw_id, train_id in id_map.items():
                    inverse[train_id] = raw_id
                label = inverse[ids]
            else:
                label = ids
            _label(root / "labels" / split / f"{stem}.png", label)
    return written
