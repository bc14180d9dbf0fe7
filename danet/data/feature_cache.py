"""Frozen-backbone features (model.freeze_backbone): computed once per machine, memory-mapped by
every run that needs them.

One entry per role: `train` (each training image at its base scale, data.base_size with the
random factor 1), `train-mirror` (the same images mirrored: a backbone's features of a mirrored
image are not its features mirrored) and `val` (each validation image as `whole` evaluation
feeds it to the model: eval.resize's keep-ratio scale). An entry is a folder named by the hash
of everything its numbers depend on (the backbone's name, multi-grid, weights and input
normalisation; the dataset, split and its files; the role's input size; torch and timm) with

    features.npy  (M, C, h, w) float32, each map zero-padded to the largest h, w
    labels.npy    (M, H, W) uint8: the label at the input's size (train) or the image's (val),
                  padded with the ignore index
    sizes.npy     (M, 6) int32: h, w, input H, input W, label H, label W of each image
    meta.json     the key's fields, the shapes and each file's CRC-32, written last

It is built in a temporary folder and renamed into place under a per-entry file lock, so two
runs that start together build it once (the second waits, then reads) and a reader never sees
half an entry. A run that needs several entries builds first those no other run is building.
Every read checks the CRCs: a torn or altered entry is removed and built again, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from danet import config as C
from danet.data.scene_cache import cache_dir

FORMAT = 1
FILES = ("features", "labels", "sizes")
ROLES = ("train", "train-mirror", "val")


@dataclass
class Entry:
    """One role's cached features, memory-mapped."""

    features: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    path: Path
    built: bool = False  # by this process (else read from the cache)

    def __len__(self) -> int:
        return len(self.sizes)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's tensors (names and bytes): the weights the features come from."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def entry_fields(
    cfg: C.Config, backbone: nn.Module, role: str, count: int, weights: str
) -> dict[str, Any]:
    """Everything the entry's numbers depend on (`weights`: weights_digest of the backbone)."""
    data = C.to_dict(cfg)["data"]
    for unused in ("crop_size", "scale_range", "flip", "num_workers", "pin_memory",
                   "persistent_workers"):
        data.pop(unused)
    if data["root"] or cfg.data.name != "synthetic":
        from danet.data.files import dataset_root

        data["root"] = str(dataset_root(cfg.data).resolve())
    return {
        "format": FORMAT, "role": role, "count": count,
        "backbone": cfg.model.backbone, "multi_grid": list(cfg.model.multi_grid),
        "weights": weights, "mean": list(backbone.mean), "std": list(backbone.std),
        "data": data, "input": list(cfg.eval.resize) if role == "val" else data["base_size"],
        "torch": torch.__version__, "timm": timm.__version__,
    }


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def read_entry(path: Path, fields: dict[str, Any]) -> Entry | None:
    """The entry at path when it is whole and is the one asked for, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("fields") != fields:
            return None
        for name in FILES:
            if _crc(path / f"{name}.npy") != meta["crc32"][name]:
                return None
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in FILES}
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None
    return Entry(**arrays, path=path)


def base_scale_size(h: int, w: int, base_size: int | tuple[int, int]) -> tuple[int, int]:
    """A training image's size at data.base_size with the random factor 1 (train_augment's
    rule: the long side to base_size; (long, short) mmseg's keep-ratio scale; 0 its own)."""
    scale = 1.0
    if isinstance(base_size, int) and base_size:
        scale = base_size / max(h, w)
    elif not isinstance(base_size, int):
        scale = min(base_size[0] / max(h, w), base_size[1] / min(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def inputs(cfg: C.Config, role: str, dataset) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(normalised image as the backbone sees it, label as stored) of each image of a role."""
    from danet.engine.inference import resize_bilinear, resize_to

    for index in range(len(dataset)):
        img, lab = dataset[index]
        h, w = img.shape[-2:]
        if role == "val":  # as `whole` evaluation feeds it; scored at the label's own size
            yield resize_bilinear(img[None], resize_to(h, w, cfg.eval.resize), False)[0], lab
            continue
        size = list(base_scale_size(h, w, cfg.data.base_size))
        if size != [h, w]:  # bilinear is linear: resizing after normalising is the same map
            img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR,
                            antialias=False)
            lab = TF.resize(lab[None], size, interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
        yield (img.flip(-1), lab.flip(-1)) if role == "train-mirror" else (img, lab)


@torch.inference_mode()
def compute(backbone: nn.Module, cfg: C.Config, role: str, dataset, ignore: int) -> dict:
    """The arrays of one entry, computed image by image on the CPU."""
    was_training = backbone.training
    backbone.eval()
    feats, labels, sizes = [], [], []
    for img, lab in inputs(cfg, role, dataset):
        f = backbone(img[None].to(next(backbone.parameters()).device))[0].float().cpu()
        feats.append(f.numpy())
        labels.append(lab.numpy().astype(np.uint8))
        sizes.append([*f.shape[-2:], *img.shape[-2:], *lab.shape[-2:]])
    backbone.train(was_training)
    sizes_np = np.asarray(sizes, dtype=np.int32)
    fh, fw, lh, lw = (int(sizes_np[:, i].max()) for i in (0, 1, 4, 5))
    out_f = np.zeros((len(feats), feats[0].shape[0], fh, fw), np.float32)
    out_l = np.full((len(labels), lh, lw), ignore, np.uint8)
    for i, (f, lab) in enumerate(zip(feats, labels)):
        out_f[i, :, : f.shape[1], : f.shape[2]] = f
        out_l[i, : lab.shape[0], : lab.shape[1]] = lab
    return {"features": out_f, "labels": out_l, "sizes": sizes_np}


def write_entry(path: Path, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write the entry into a temporary folder, meta.json last, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        crcs = {}
        for name in FILES:
            np.save(tmp / f"{name}.npy", arrays[name])
            crcs[name] = _crc(tmp / f"{name}.npy")
        shapes = {name: list(arrays[name].shape) for name in FILES}
        meta = {"fields": fields, "crc32": crcs, "shapes": shapes}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(path, ignore_errors=True)  # a torn or stale entry of the same key
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on path's entry: yields whether it was taken (always, with wait)."""
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def entries(
    backbone: nn.Module, cfg: C.Config, roles: tuple[str, ...], datasets: dict[str, Any],
    ignore: int,
) -> dict[str, Entry]:
    """The entries of `roles` (datasets: role -> the split's images, eval transform), each
    read from the cache or built once."""
    folder = cache_dir() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    wanted, weights = {}, weights_digest(backbone)  # hashed once for every role
    for role in roles:
        fields = entry_fields(cfg, backbone, role, len(datasets[role]), weights)
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
        wanted[role] = (folder / f"{cfg.model.backbone}-{role}-{key}", fields)
    found: dict[str, Entry] = {}
    for wait in (False, True):  # first what nobody else is building, then wait for the rest
        for role, (path, fields) in wanted.items():
            if role in found:
                continue
            with _locked(path, wait) as mine:
                if not mine:
                    continue
                entry = read_entry(path, fields)
                if entry is None:
                    write_entry(path, fields, compute(backbone, cfg, role, datasets[role], ignore))
                    entry = read_entry(path, fields)
                    if entry is not None:
                        entry.built = True
                if entry is None:
                    raise OSError(f"{path}: a feature cache entry just written reads back torn")
                found[role] = entry
    return found
