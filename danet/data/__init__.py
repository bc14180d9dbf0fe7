"""Datasets by name. Samples are (normalised image 3xHxW float, label HxW int64)."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from danet.config import DataConfig
from danet.data import scene_cache, synthetic
from danet.data.layouts import LAYOUTS, register_dataset
from danet.data.sampler import seed_from
from danet.data.transforms import normalize, to_tensors, train_augment
from danet.errors import DanetError, unknown_choice

__all__ = ["build_dataset", "check_data_config", "datasets", "num_classes", "register_dataset"]


def datasets() -> tuple[str, ...]:
    """Every data.name: the built-in scenes, the downloadable layouts, folder (danet.data.folder)
    and the layouts that plugins registered (register_dataset)."""
    return ("synthetic", *LAYOUTS, "folder")


class SyntheticDataset(Dataset):
    """The built-in procedural dataset (danet.data.synthetic).

    Training items are looked up by (index, draw) from danet.data.sampler.ResumableSampler;
    augmentation is seeded by (run seed, draw), so it depends on the run seed alone and a
    resumed run sees exactly the samples an uninterrupted one would."""

    classes = synthetic.CLASSES
    ignore_index = synthetic.IGNORE
    same_size = True  # validation images all have one size, so evaluation can batch them

    def __init__(
        self, cfg: DataConfig, split: str, seed: int = 0, augment: bool | None = None
    ) -> None:
        self.cfg, self.split, self.seed = cfg, split, seed
        self.augment = split == "train" if augment is None else augment
        self.length = cfg.train_size if split == "train" else cfg.val_size
        self.scenes = scene_cache.scenes(
            split, cfg.setting, cfg.image_size, cfg.data_seed, self.length
        )

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> tuple:
        """(image HxWx3 uint8, label HxW uint8): from the scene cache, else generated."""
        if self.scenes is not None:
            return self.scenes[index, ..., :3], self.scenes[index, ..., 3]
        cfg = self.cfg
        return synthetic.generate(index, self.split, cfg.setting, cfg.image_size, cfg.data_seed)

    def __getitem__(self, item: int | tuple[int, int]):
        index, draw = item if isinstance(item, tuple) else (item, 0)
        image, label = self.scene(index)
        img, lab = to_tensors(image, label)
        if self.augment:
            gen = torch.Generator().manual_seed(seed_from(self.seed, draw))
            img, lab = train_augment(
                img,
                lab,
                self.cfg.crop_size,
                self.cfg.scale_range,
                self.cfg.flip,
                gen,
                self.ignore_index,
                self.cfg.base_size,
                self.cfg.scale_mode,
            )
        return normalize(img), lab


def check_data_config(cfg: DataConfig) -> None:
    """Cheap checks of names and splits; the files are checked when a dataset is built."""
    if cfg.name not in datasets():
        raise unknown_choice("data.name", cfg.name, datasets())
    if cfg.name == "synthetic":
        if cfg.setting not in synthetic.SETTINGS:
            raise unknown_choice("data.setting", cfg.setting, synthetic.SETTINGS)
        return
    if cfg.name == "folder":  # any split names: subfolders of images/ and labels/
        if not 0 <= cfg.ignore_index <= 255:
            raise DanetError(f"'data.ignore_index' must be 0-255, got {cfg.ignore_index}")
        return
    splits = LAYOUTS[cfg.name].splits
    for key in ("train_split", "val_split"):
        if getattr(cfg, key) not in splits:
            raise unknown_choice(f"data.{key} of {cfg.name}", getattr(cfg, key), splits)


TRANSFORMS = ("train", "eval")


def build_dataset(
    cfg: DataConfig, split: str, seed: int = 0, transform: str | None = None
) -> Dataset:
    """split: train or val, the images read. transform: "train" (random scale, crop and flip,
    (index, draw) items) or "eval" (whole images, unchanged); None: the split's own, train
    for train and eval for val."""
    check_data_config(cfg)
    if split not in ("train", "val") or transform not in (None, *TRANSFORMS):
        raise ValueError(f"split {split!r}, transform {transform!r}: not train/val, train/eval")
    transform = transform or ("train" if split == "train" else "eval")
    if cfg.name == "synthetic":
        return SyntheticDataset(cfg, split, seed, augment=transform == "train")
    from danet.data.files import FileDataset

    # A FileDataset applies the train transform to data.train_split's files and the eval
    # one to data.val_split's: point the key of the transform wanted at the split's files.
    files = getattr(cfg, f"{split}_split")
    if transform == "eval":
        return FileDataset(dataclasses.replace(cfg, val_split=files), "val", seed)
    return FileDataset(dataclasses.replace(cfg, train_split=files), "train", seed)


def num_classes(cfg: DataConfig) -> int:
    """The class count of a dataset, without reading its files (folder: its class list)."""
    check_data_config(cfg)
    if cfg.name == "folder":
        from danet.data.files import dataset_root
        from danet.data.folder import read_layout

        return len(read_layout(dataset_root(cfg), cfg.ignore_index).classes)
    return len(synthetic.CLASSES if cfg.name == "synthetic" else LAYOUTS[cfg.name].classes)
