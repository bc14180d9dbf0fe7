"""data.name=folder: a dataset of one's own, as images, label maps and a class list.

    ROOT/classes.txt             one class per line, in class-index order: `name`, or
                                 `name r g b` when the label maps are RGB colours
                                 (`ignore r g b`: a colour of unlabelled pixels, not a class)
    ROOT/id_map.txt              optional, single-channel maps: lines `raw_id class_index`
    ROOT/images/<split>/*.png|jpg|jpeg
    ROOT/labels/<split>/*.png    matched to the images by file stem

Single-channel label maps hold class indices (or raw ids mapped through id_map.txt), and
`data.ignore_index` marks unlabelled pixels; any other value is an error naming the file and
the value. RGB label maps are decoded through the colours of classes.txt; an unknown colour
is an error naming the file and the colour. Blank lines and lines starting with # are skipped
in both text files. docs/datasets.md has the whole description.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from danet.data.layouts import IGNORE, Layout
from danet.errors import DanetError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASS_FILE, ID_MAP = "classes.txt", "id_map.txt"
IGNORE_NAME = "ignore"  # a classes.txt line `ignore r g b`: that colour is unlabelled


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are neither blank nor comments."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DanetError(f"{path}: unreadable ({one_line(e)})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


def _class_line(path: Path, n: int, line: str) -> tuple[str, tuple[int, int, int] | None]:
    """`name` or `name r g b`: trailing numbers are a colour, and must be three of 0-255."""
    words = line.split()
    k = len(words)
    while k > 0 and words[k - 1].isdigit():
        k -= 1
    numbers = words[k:]
    if k == 0 or (numbers and (len(numbers) != 3 or max(int(v) for v in numbers) > 255)):
        raise DanetError(
            f"{path}:{n}: bad class line '{line}'; write 'name', or 'name r g b' with an "
            "RGB colour of 0-255 each (a name may not end in a number)"
        )
    name = " ".join(words[:k])
    return name, (tuple(int(v) for v in numbers) if numbers else None)  # type: ignore[return-value]


def read_layout(root: Path, ignore_index: int = IGNORE) -> Layout:
    """The classes and the label decoding of a folder dataset, from classes.txt (and
    id_map.txt); each bad line is a DanetError naming the file and the line."""
    path = root / CLASS_FILE
    if not path.is_file():
        raise DanetError(
            f"{path}: missing (the class list: one name per line, or 'name r g b' for RGB "
            "label maps); check data.root and docs/datasets.md"
        )
    classes, colours = _read_classes(path)
    if not classes:
        raise DanetError(f"{path}: lists no classes")
    if len(classes) > IGNORE:
        raise DanetError(f"{path}: {len(classes)} classes; at most {IGNORE} are supported")
    if not len(classes) <= ignore_index <= 255:
        raise DanetError(
            f"data.ignore_index {ignore_index} must be a label value that is not a class: "
            f"{len(classes)}-255 for the {len(classes)} classes of {path}"
        )
    identity = np.full(256, IGNORE, np.uint8)
    identity[: len(classes)] = np.arange(len(classes))
    if colours:
        if (root / ID_MAP).exists():
            raise DanetError(
                f"{root / ID_MAP}: an id map applies to single-channel label maps, but "
                f"{path} gives colours (RGB label maps); remove one of them"
            )
        codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], np.int64)
        order = np.argsort(codes)
        ids = np.array(list(colours.values()), np.uint8)[order]
        return Layout(tuple(classes), identity, (), palette=(codes[order], ids))
    if not (root / ID_MAP).exists():
        valid = np.zeros(256, bool)
        valid[ignore_index] = True
        valid[: len(classes)] = True
        note = f"{path} lists {len(classes)} classes (0-{len(classes) - 1}); " + (
            f"data.ignore_index is {ignore_index}"
        )
        return Layout(tuple(classes), identity, (), valid=valid, valid_note=note)
    return _id_map_layout(root / ID_MAP, tuple(classes), ignore_index)


def _read_classes(path: Path) -> tuple[list[str], dict[tuple[int, int, int], int]]:
    """(class names, {colour: class index, or IGNORE for 'ignore r g b'}) of classes.txt;
    no colours ({}): single-channel label maps."""
    classes: list[str] = []
    colours: dict[tuple[int, int, int], int] = {}
    plain = coloured = 0
    for n, line in _lines(path):
        name, colour = _class_line(path, n, line)
        if colour is None:
            plain += 1
        elif name != IGNORE_NAME:
            coloured += 1
        if plain and coloured:
            raise DanetError(
                f"{path}:{n}: '{line}': give every class a colour (RGB label maps) or none "
                "(single-channel class indices)"
            )
        if colour is not None and colour in colours:
            raise DanetError(f"{path}:{n}: colour {colour} is given twice")
        if name == IGNORE_NAME:
            if colour is None:
                raise DanetError(
                    f"{path}:{n}: 'ignore' names the colour of unlabelled pixels in RGB label "
                    "maps ('ignore r g b'); single-channel maps use data.ignore_index"
                )
            colours[colour] = IGNORE
            continue
        if name in classes:
            raise DanetError(f"{path}:{n}: class '{name}' is listed twice")
        if colour is not None:
            colours[colour] = len(classes)
        classes.append(name)
    return classes, colours if coloured else {}  # an 'ignore' colour alone: single-channel


def _id_map_layout(id_map: Path, classes: tuple[str, ...], ignore_index: int) -> Layout:
    """A single-channel layout whose raw label values id_map.txt maps to class indices."""
    valid = np.zeros(256, bool)
    valid[ignore_index] = True
    lut = np.full(256, IGNORE, np.uint8)
    for n, line in _lines(id_map):
        words = line.split()
        ok = len(words) == 2 and all(w.isdigit() for w in words) and int(words[0]) <= 255
        if not ok or not (int(words[1]) < len(classes) or int(words[1]) == ignore_index):
            raise DanetError(
                f"{id_map}:{n}: bad line '{line}'; write 'raw_id class_index' with a "
                f"raw id of 0-255 and a class index below {len(classes)} or data.ignore_index "
                f"{ignore_index}"
            )
        raw, cls = int(words[0]), int(words[1])
        if raw == ignore_index or valid[raw]:
            what = "data.ignore_index" if raw == ignore_index else "mapped twice"
            raise DanetError(f"{id_map}:{n}: raw id {raw} is {what}")
        valid[raw] = True
        lut[raw] = IGNORE if cls == ignore_index else cls
    note = f"not in {id_map} (map it to data.ignore_index {ignore_index} to ignore it)"
    return Layout(classes, lut, (), valid=valid, valid_note=note)


def list_samples(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, label) pairs of ROOT/images/<split> and ROOT/labels/<split>, matched by stem."""
    if not root.is_dir():
        raise DanetError(f"{root}: dataset folder not found; set data.root to where folder is")
    folders = {}
    for part in ("images", "labels"):
        folders[part] = root / part / split
        if not folders[part].is_dir():
            raise DanetError(
                f"{folders[part]}: missing ({part} of split '{split}': {root}/{part}/<split>/); "
                "check data.root, data.train_split, data.val_split and docs/datasets.md"
            )
    images: dict[str, Path] = {}
    for p in sorted(folders["images"].iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            if p.stem in images:
                raise DanetError(f"{p}: two images named '{p.stem}' ({images[p.stem].name})")
            images[p.stem] = p
    labels = {
        p.stem: p for p in sorted(folders["labels"].glob("*")) if p.suffix.lower() == ".png"
    }
    if not images:
        raise DanetError(
            f"{folders['images']}: no images ({', '.join(IMAGE_SUFFIXES)}) for split '{split}'"
        )
    for have, lack, what in ((images, labels, "label map"), (labels, images, "image")):
        missing = [stem for stem in have if stem not in lack]
        if missing:
            first = have[missing[0]]
            where = folders["labels" if what == "label map" else "images"]
            raise DanetError(
                f"{first}: no {what} of the same stem in {where} ({len(missing)} of "
                f"{len(have)} files lack one); files are matched by name without suffix"
            )
    return [(images[stem], labels[stem]) for stem in images]
