"""Evaluation-time inference modes: whole image, sliding window, multi-scale + flip.

All functions take one normalised image (1, 3, H, W) and return logits (1, K, H, W).

- whole: one forward pass on the full image; evaluation uses the model's first output.
- slide: crop-sized windows with stride int(crop * stride_rate) per axis (official 768 -> 512).
  The window count per axis is the official ceil((L - crop) / stride) + 1, but the windows are
  spread evenly from 0 to L - crop instead of stepping by exactly `stride`: same count, every
  gap <= stride, and mirror-symmetric (see `window_starts`). The official code instead lets the
  last window run past the image and pads it; mmseg clamps it back inside. An axis shorter than
  the crop is padded bottom/right with zeros, i.e. the mean colour after normalisation (the
  official code pads with black, -mean/std; mmseg does not pad). Logits are averaged per pixel.
- flip: slide at the image's own scale plus its mirror image: the official "single scale"
  numbers (test.py always flips); msflip with scales (1.0,).
- msflip: for each scale s the image is resized to round(H*s) x round(W*s) (the official code
  scales the long side to base_size * s instead, the same for Cityscapes where base_size is the
  image's long side), slid, and the logits resized back. As in the official code, the two
  flips' logits are added and exp(sum) is summed over scales (here in log space, logaddexp);
  the official code averages overlapping windows after exp, this code before.
- resize (mmseg's keep-ratio test scale) applies before any mode; logits come back at (H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from danet.config import EVAL_MODES, EvalConfig
from danet.data.transforms import pair
from danet.errors import DanetError, unknown_choice

MODES = EVAL_MODES  # the config's list of eval.modes


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis; evenly spread, first 0, last length - crop.

    Mirror-symmetric except in one unavoidable case: an odd number of windows over an odd
    span (length - crop) puts the middle window at ceil(span / 2), half a pixel off centre.
    """
    if length <= crop:
        return [0]
    span = length - crop
    n = math.ceil(span / stride) + 1
    # i * span / (n - 1) rounded half up; each gap is then floor or ceil of span / (n - 1),
    # which is <= stride because n - 1 >= span / stride.
    starts = [(2 * i * span + n - 1) // (2 * (n - 1)) for i in range(n)]
    for i in range(n // 2):  # mirror the first half so a horizontal flip maps windows to windows
        starts[n - 1 - i] = span - starts[i]
    return starts


def window_boxes(
    h: int, w: int, crop_hw: tuple[int, int], stride_hw: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every window, clipped to the image."""
    (ch, cw), (sh, sw) = crop_hw, stride_hw
    return [
        (y, min(y + ch, h), x, min(x + cw, w))
        for y in window_starts(h, ch, sh)
        for x in window_starts(w, cw, sw)
    ]


def whole_logits(model: nn.Module, img: Tensor) -> Tensor:
    """The main (fused) output on the whole image."""
    return model(img)[0]


def slide_logits(
    model: nn.Module,
    img: Tensor,
    crop_hw: tuple[int, int],
    stride_rate: float,
    window_batch: int = 4,
) -> Tensor:
    """Per-pixel mean of the logits of all crop-sized windows; `window_batch` windows per pass."""
    _, _, h, w = img.shape
    ch, cw = crop_hw
    stride = (max(1, int(ch * stride_rate)), max(1, int(cw * stride_rate)))
    ph, pw = max(h, ch), max(w, cw)
    # Pad bottom/right so that every window is a full crop; 0 is the mean colour.
    padded = F.pad(img, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else img
    boxes = window_boxes(ph, pw, (ch, cw), stride)
    total: Tensor | None = None
    count = img.new_zeros(1, 1, ph, pw)
    for i in range(0, len(boxes), window_batch):
        chunk = boxes[i : i + window_batch]
        out = whole_logits(
            model, torch.cat([padded[..., y0:y1, x0:x1] for y0, y1, x0, x1 in chunk])
        )
        if total is None:
            total = out.new_zeros(1, out.shape[1], ph, pw)
        for o, (y0, y1, x0, x1) in zip(out, chunk):
            total[0, :, y0:y1, x0:x1] += o
            count[..., y0:y1, x0:x1] += 1
    return (total / count)[..., :h, :w]


def resize_bilinear(x: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """Bilinear resize that returns `x` itself when the size already matches (exact)."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def msflip_logits(
    model: nn.Module,
    img: Tensor,
    crop_hw: tuple[int, int],
    stride_rate: float,
    scales: tuple[float, ...],
    flip: bool = True,
) -> Tensor:
    """log(sum over scales of exp(logits + flipped logits)), at the input size."""
    if not scales:
        raise DanetError("eval.scales must not be empty for msflip")
    _, _, h, w = img.shape

    def at_scale(x: Tensor, s: float) -> Tensor:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        out = slide_logits(model, resize_bilinear(x, size, True), crop_hw, stride_rate)
        return resize_bilinear(out, (h, w), True)  # align_corners=True, as the model upsamples

    flipped = img.flip(-1) if flip else None
    total: Tensor | None = None
    for s in scales:
        term = at_scale(img, s)
        if flipped is not None:
            # Flip before resizing and back after: the pair is then exactly swapped (and flipped)
            # for a flipped input, and + is commutative, so the result is flip-invariant.
            term = term + at_scale(flipped, s).flip(-1)
        total = term if total is None else torch.logaddexp(total, term)
    return total


def resize_to(h: int, w: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """mmseg's keep-ratio rescale: the largest size within (long, short); () keeps (h, w)."""
    if not resize:
        return h, w
    ok = len(resize) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in resize)
    if not ok or min(resize) <= 0:
        raise DanetError(f"eval.resize must be empty or two positive ints (long, short): {resize}")
    f = min(resize[0] / max(h, w), resize[1] / min(h, w))
    # int(x + 0.5) like mmcv's rescale_size (round half up, not Python's half-to-even)
    return max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))


@torch.inference_mode()
def predict(
    model: nn.Module, img: Tensor, mode: str, cfg: EvalConfig, default_crop: int | tuple[int, int]
) -> Tensor:
    """Logits (1, K, H, W) of one image with the given mode, at the image's original size."""
    if mode not in MODES:
        raise unknown_choice("eval.modes", mode, MODES)
    crop = cfg.crop_size or default_crop
    crop_hw = pair(crop)
    if len(crop_hw) != 2 or min(crop_hw) <= 0:
        raise DanetError(f"eval.crop_size must be a positive int or (h, w): {crop}")
    if not 0 < cfg.stride_rate <= 1:  # a stride over the crop would leave pixels uncovered
        raise DanetError(f"eval.stride_rate must be in (0, 1]: {cfg.stride_rate}")
    h, w = img.shape[-2:]
    x = resize_bilinear(img, resize_to(h, w, cfg.resize), False)  # align_corners=False like mmseg
    if mode == "whole":
        out = whole_logits(model, x)
    elif mode == "slide":
        out = slide_logits(model, x, crop_hw, cfg.stride_rate)
    elif mode == "flip":
        out = msflip_logits(model, x, crop_hw, cfg.stride_rate, (1.0,), True)
    else:
        out = msflip_logits(model, x, crop_hw, cfg.stride_rate, cfg.scales, cfg.flip)
    return resize_bilinear(out, (h, w), False)
