"""Training augmentation: random scale, pad (label ignore), random crop, horizontal flip.

Image and label must move together, so this uses torchvision's functional ops on both
rather than its per-image transform classes.

How the random scale is drawn is `data.scale_mode`, named after the code it follows
(docs/reference.md, section 1; docs/datasets.md):

- `danet-v0.5.0`: the official DANet code at tag v0.5.0 (`encoding/datasets/base.py`,
  `_sync_transform`): the short side becomes an integer drawn uniformly from
  int(low x base) .. int(high x base), the long side keeps the aspect ratio (rounded down).
  With scale_range [1, 1] and base 1024 a 2048x1024 Cityscapes frame keeps its size.
- `danet-master`: DANet's master branch (PyTorch-Encoding 1.0): the long side becomes
  base x a factor drawn uniformly from scale_range (here continuous, not an integer).
- `mmseg`: mmsegmentation's keep-ratio resize: base (long, short) x the factor, and the image
  is scaled to the largest size that fits within both.
- `auto`: by base_size's form, as before this key existed: a size is `danet-master`, a
  [long, short] pair is `mmseg`.

A base_size of 0 is the image's own size. In every mode the image is then padded (image 0,
label ignore) where it is smaller than the crop, cropped at random and flipped with p = 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from danet import IGNORE_INDEX
from danet.errors import DanetError, unknown_choice

SCALE_MODES = ("auto", "danet-v0.5.0", "danet-master", "mmseg")


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


def resolve_scale_mode(mode: str, base_size: int | tuple[int, int]) -> str:
    """The mode `auto` stands for with this base_size; other modes unchanged."""
    if mode != "auto":
        return mode
    return "danet-master" if isinstance(base_size, int) else "mmseg"


def check_scale_mode(mode: str, base_size: int | tuple[int, int]) -> None:
    """A mode that exists, and a base_size of the form it reads."""
    if mode not in SCALE_MODES:
        raise unknown_choice("data.scale_mode", mode, SCALE_MODES)
    mode = resolve_scale_mode(mode, base_size)
    if mode == "mmseg" and isinstance(base_size, int):
        raise DanetError(
            f"'data.scale_mode' mmseg reads 'data.base_size' as [long, short], got {base_size}; "
            "set data.base_size=[2048,1024] (say), or data.scale_mode=danet-v0.5.0 for a side"
        )
    if mode != "mmseg" and not isinstance(base_size, int):
        raise DanetError(
            f"'data.scale_mode' {mode} reads 'data.base_size' as one side, got "
            f"{list(base_size)}; set data.base_size=1024 (say), or data.scale_mode=mmseg"
        )


def scaled_size(
    h: int,
    w: int,
    base_size: int | tuple[int, int],
    scale_range,
    gen: torch.Generator,
    mode: str = "auto",
) -> tuple[int, int]:
    """The (height, width) an h x w training image is rescaled to: one random draw from gen."""
    mode = resolve_scale_mode(mode, base_size)
    lo, hi = scale_range
    if mode == "danet-v0.5.0":
        base = base_size or min(h, w)
        first = max(1, int(base * lo))  # random.randint(int(base*0.75), int(base*2.0)) there
        short = int(torch.randint(first, max(first, int(base * hi)) + 1, (), generator=gen))
        if h > w:  # the other side as the official code computes it: int() rounds down
            return max(1, int(h * short / w)), short
        return short, max(1, int(w * short / h))
    # the long-side and keep-ratio modes: a continuous factor, the draw as it always was here
    scale = lo + (hi - lo) * float(torch.rand((), generator=gen))
    if isinstance(base_size, int) and base_size:
        scale *= base_size / max(h, w)
    elif not isinstance(base_size, int):  # (long, short): the largest size within both
        scale *= min(base_size[0] / max(h, w), base_size[1] / min(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def train_augment(
    img: torch.Tensor,
    lab: torch.Tensor,
    crop: int | tuple[int, int],
    scale_range,
    flip: bool,
    gen: torch.Generator,
    ignore_index: int = IGNORE_INDEX,
    base_size: int | tuple[int, int] = 0,
    scale_mode: str = "auto",
):
    """Rescale as scale_mode draws it (module docstring), pad to the crop (image 0, label
    ignore), crop at random, flip."""
    size = list(scaled_size(*img.shape[-2:], base_size, scale_range, gen, scale_mode))
    # torchvision returns the tensor itself when the size is unchanged: no resampling then
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
