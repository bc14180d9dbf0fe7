"""A downloaded dataset on disk: (image, label map) files read with Pillow.

Every pair is checked when the dataset is built: both files must open and have the same
size (Pillow reads only the headers, ~0.1 ms a pair). A file that fails to decode later
raises a DanetError naming it, whatever the DataLoader worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from danet.config import DataConfig
from danet.data.layouts import IGNORE, LAYOUTS, list_samples
from danet.data.sampler import seed_from
from danet.data.transforms import normalize, to_tensors, train_augment
from danet.errors import DanetError, one_line
from danet.utils import progress_bar

LARGE_TREE = 2000  # pairs from which the header check shows its progress


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, ValueError) as e:
        raise DanetError(f"{path}: unreadable ({one_line(e)})") from None


def label_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header; None for a .mat label, sized when read."""
    if path.suffix == ".mat":
        return None
    with _open(path) as im:
        return im.size


def read_image(path: Path) -> np.ndarray:
    try:
        with _open(path) as im:
            return np.array(im.convert("RGB"))
    except OSError as e:
        raise DanetError(f"{path}: unreadable ({e})") from None


def read_label(path: Path, rgb: bool = False) -> np.ndarray:
    """Raw label values (HxW uint8). A palette PNG gives its indices, as VOC stores classes.
    rgb: colours (HxWx3 uint8) of an RGB or palette PNG instead (data.name=folder)."""
    if rgb:
        with _open(path) as im:
            if im.mode not in ("RGB", "RGBA", "P"):
                raise DanetError(
                    f"{path}: label map is mode {im.mode}, but the class list gives colours "
                    "(RGB label maps); drop the colours from it to read class indices"
                )
            try:
                return np.array(im.convert("RGB"))
            except OSError as e:
                raise DanetError(f"{path}: unreadable ({e})") from None
    if path.suffix == ".mat":
        from scipy.io import loadmat  # SBD's MATLAB files; scipy reads them, nothing else here does

        try:
            return np.asarray(
                loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation,
                np.uint8,
            )
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise DanetError(f"{path}: unreadable SBD label ({e})") from None
    try:
        with _open(path) as im:
            if im.mode not in ("L", "P"):
                raise DanetError(
                    f"{path}: label maps must be single-channel (mode L or P), got {im.mode}"
                )
            return np.array(im)
    except OSError as e:
        raise DanetError(f"{path}: unreadable ({e})") from None


class FileDataset(Dataset):
    """One split of a downloaded dataset (danet.data.layouts). Items are the same as the
    built-in dataset's: training items are (index, draw) and augmented from the run seed."""

    ignore_index = IGNORE

    def __init__(self, cfg: DataConfig, split: str, seed: int = 0) -> None:
        self.cfg, self.train, self.seed = cfg, split == "train", seed
        root = dataset_root(cfg)
        split = cfg.train_split if self.train else cfg.val_split
        if cfg.name == "folder":
            from danet.data import folder

            self.layout = folder.read_layout(root, cfg.ignore_index)
            self.samples = folder.list_samples(root, split)
        else:
            self.layout = LAYOUTS[cfg.name]
            self.samples = list_samples(cfg.name, root, split)
        self.classes, self.lut = self.layout.classes, self.layout.lut
        large = len(self.samples) >= LARGE_TREE  # ADE20K's 20k pairs: seconds, on a slow disk more
        with progress_bar(len(self.samples), f"checking {split} files", large, "pair") as bar:
            for image, label in self.samples:
                with _open(image) as im:
                    size = im.size
                lsize = label_size(label)
                if lsize is not None and lsize != size:
                    raise DanetError(_size_error(image, label, size, lsize))
                bar.update()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 image, HxW uint8 training ids) of one sample, unaugmented."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        palette, valid = self.layout.palette, self.layout.valid
        raw = read_label(label_path, rgb=palette is not None)
        if raw.shape[:2] != image.shape[:2]:
            raise DanetError(
                _size_error(image_path, label_path, image.shape[1::-1], raw.shape[1::-1])
            )
        if palette is not None:
            return image, _decode_colours(raw, palette, label_path)
        if valid is not None and not valid[raw].all():
            value = int(raw[~valid[raw]][0])
            raise DanetError(
                f"{label_path}: label value {value} is not valid; {self.layout.valid_note}"
            )
        return image, self.lut[raw]

    def name_of(self, index: int) -> str:
        """The image's file name without suffix, as benchmark servers name predictions."""
        return self.samples[index][0].stem

    def raw_ids(self) -> np.ndarray:
        """Training id -> the dataset's own label value (the inverse of the label table)."""
        inverse = np.zeros(256, np.uint8)
        for raw in range(255, -1, -1):  # the lowest raw value of a class wins
            if self.lut[raw] != IGNORE:
                inverse[self.lut[raw]] = raw
        return inverse

    def __getitem__(self, item: int | tuple[int, int]):
        index, draw = item if isinstance(item, tuple) else (item, 0)
        img, lab = to_tensors(*self.load(index))
        if self.train:
            gen = torch.Generator().manual_seed(seed_from(self.seed, draw))
            img, lab = train_augment(
                img, lab, self.cfg.crop_size, self.cfg.scale_range, self.cfg.flip, gen,
                self.ignore_index, self.cfg.base_size, self.cfg.scale_mode,
            )
        return normalize(img), lab


def dataset_root(cfg: DataConfig) -> Path:
    """data.root, or data/<name> by default."""
    return Path(cfg.root or Path("data") / cfg.name)


def _decode_colours(rgb: np.ndarray, palette: tuple[np.ndarray, np.ndarray], path) -> np.ndarray:
    """HxWx3 colours -> training ids through a sorted palette; an unknown colour is an error."""
    codes, ids = palette
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    pos = np.minimum(np.searchsorted(codes, code), len(codes) - 1)
    unknown = codes[pos] != code
    if unknown.any():
        r, g, b = (int(v) for v in rgb[unknown][0])
        raise DanetError(
            f"{path}: colour ({r}, {g}, {b}) is in no line of classes.txt ({int(unknown.sum())} "
            "pixels); add it as a class, or as 'ignore r g b' to leave it unlabelled"
        )
    return ids[pos]


def _size_error(image: Path, label: Path, size, lsize) -> str:
    return (
        f"{label}: label map is {lsize[0]}x{lsize[1]} but its image {image} is "
        f"{size[0]}x{size[1]}; re-extract the dataset"
    )
