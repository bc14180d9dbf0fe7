"""Training augmentation: random scale, pad (label 255), random crop, horizontal flip.

Image and label must move together, so this uses torchvision's functional ops on both
rather than its per-image transform classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


def to_tensors(image, label) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 uint8 and HxW uint8 arrays -> float 3xHxW in [0, 1] and int64 HxW."""
    img = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
    return img, torch.from_numpy(label).long()


def normalize(img: torch.Tensor) -> torch.Tensor:
    return TF.normalize(img, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def train_augment(
    img: torch.Tensor,
    lab: torch.Tensor,
    crop: int,
    scale_range,
    flip: bool,
    gen: torch.Generator,
    ignore_index: int = 255,
):
    lo, hi = scale_range
    scale = lo + (hi - lo) * float(torch.rand((), generator=gen))
    h, w = img.shape[-2:]
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    lab = TF.resize(lab[None], size, interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
    ph, pw = max(crop - size[0], 0), max(crop - size[1], 0)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
        lab = F.pad(lab, (0, pw, 0, ph), value=ignore_index)
    h, w = img.shape[-2:]
    y = int(torch.randint(h - crop + 1, (), generator=gen))
    x = int(torch.randint(w - crop + 1, (), generator=gen))
    img, lab = img[:, y : y + crop, x : x + crop], lab[y : y + crop, x : x + crop]
    if flip and float(torch.rand((), generator=gen)) < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)
    return img, lab
