"""A dataset layout that needs code, registered as data.name=side_by_side (config: plugins):
each image ROOT/<split>/<stem>.jpg lies beside its label map ROOT/<split>/<stem>_mask.png,
whose values 0, 1, 2 are the classes and 255 marks unlabelled pixels."""

from pathlib import Path

from danet.data import register_dataset


def pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    masks = sorted((root / split).glob("*_mask.png"))
    return [(m.with_name(m.name.removesuffix("_mask.png") + ".jpg"), m) for m in masks]


register_dataset("side_by_side", pairs, ["background", "road", "car"])
