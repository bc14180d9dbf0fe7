"""Training augmentation: random scale, pad (label 255), random crop, horizontal flip.

Image and label must move together, so this uses torchvision's functional ops on both
rather than its per-image transform classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from danet import IGNORE_INDEX


def to_tensors(image, label) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 uint8 and HxW uint8 arrays -> float 3xHxW in [0, 1] and int64 HxW."""
    # torch.tensor copies: the arrays may be read-only views of the scene cache
    img = torch.tensor(np.asarray(image)).permute(2, 0, 1).float().div_(255)
    return img, torch.tensor(np.asarray(label)).long()


def normalize(img: torch.Tensor) -> torch.Tensor:
    return TF.normalize(img, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """A crop size given as one side or (height, width)."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def train_augment(
    img: torch.Tensor,
    lab: torch.Tensor,
    crop: int | tuple[int, int],
    scale_range,
    flip: bool,
    gen: torch.Generator,
    ignore_index: int = IGNORE_INDEX,
    base_size: int | tuple[int, int] = 0,
):
    """Rescale by a random factor in scale_range (of base_size on the long side, as the
    official code does; of mmseg's keep-ratio scale for (long, short); of the image's own
    size for 0), pad to the crop
    (image 0, label ignore), crop at random, flip."""
    lo, hi = scale_range
    scale = lo + (hi - lo) * float(torch.rand((), generator=gen))
    h, w = img.shape[-2:]
    if isinstance(base_size, int) and base_size:
        scale *= base_size / max(h, w)
    elif not isinstance(base_size, int):  # (long, short): the largest size within both
        scale *= min(base_size[0] / max(h, w), base_size[1] / min(h, w))
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    lab = TF.resize(lab[None], size, interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
    ch, cw = pair(crop)
    ph, pw = max(ch - size[0], 0), max(cw - size[1], 0)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
        lab = F.pad(lab, (0, pw, 0, ph), value=ignore_index)
    h, w = img.shape[-2:]
    y = int(torch.randint(h - ch + 1, (), generator=gen))
    x = int(torch.randint(w - cw + 1, (), generator=gen))
    img, lab = img[:, y : y + ch, x : x + cw], lab[y : y + ch, x : x + cw]
    if flip and float(torch.rand((), generator=gen)) < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)
    return img, lab
