"""The built-in dataset: procedural scenes where local appearance is not enough.

Every image (deterministic from data_seed, split and index) has a *cue band* along its top or
bottom edge and an *object zone* along the opposite edge, at least MARGIN pixels apart, which
is more than the half receptive field of the default backbone plus head (51 px, README).

Classes (8):
  0 background         textured grey
  1 square/warm scene  grey squares, identical to class 2 in every pixel ...
  2 square/cool scene  ... told apart only by the band's colour (warm or cool): a cue that
                       pooling over the whole image reads (SE, GC, CAM).
  3 disc/solid key     discs of one of four hues, identical to class 4 ...
  4 disc/checked key   ... told apart only by the key patch *of the same hue* in the band,
                       solid or checked: a cue that needs pairwise affinity between distant
                       pixels of the same hue (PAM); each image has two hues with keys drawn
                       independently, so the image-level average does not decide it.
  5 band/warm, 6 band/cool, 7 key patch: locally decidable.
Objects are squares of side 8-40 px and discs of radius 4-20 px (several scales); a one-pixel
ring around each object is labelled 255 (ignore), as object boundaries are in VOC.

Setting `local` is the control: the same scenes, but class-2 squares and class-4 discs carry
a stripe texture, so every label is decidable from a local window.
"""

from __future__ import annotations

import numpy as np

from danet import IGNORE_INDEX

CLASSES = (
    "background",
    "square/warm",
    "square/cool",
    "disc/solid-key",
    "disc/checked-key",
    "band/warm",
    "band/cool",
    "key",
)
SETTINGS = ("context", "local")
AMBIGUOUS_PAIRS = ((1, 2), (3, 4))  # locally identical in the context setting
IGNORE = IGNORE_INDEX  # the ring around each object
BAND = 44  # band height in px at image_size 176; everything scales with image_size
MARGIN = 56  # px between the band and the object zone at image_size 176
WARM, COOL = (200, 90, 40), (40, 90, 200)
HUES = ((225, 215, 40), (40, 215, 215), (215, 40, 215), (60, 200, 60))
SQUARE_GREY = 165
SPLIT_IDS = {"train": 0, "val": 1}


def _disc(win: tuple[slice, slice], cy: float, cx: float, r: float) -> np.ndarray:
    """Mask of the disc within the window `win` (only the bounding box is computed)."""
    yy, xx = np.ogrid[win[0], win[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _paint(img, lab, window, mask, ring, color, cls, rng, stripes=False):
    """Paint `mask` (within `window`) with a noisy colour; label it `cls` and `ring` 255."""
    img, lab = img[window], lab[window]
    lab[ring & ~mask] = IGNORE
    pix = np.asarray(color, np.float32) + 8 * rng.standard_normal((int(mask.sum()), 3), np.float32)
    if stripes:  # the control setting's local marker: darker every 4th row
        rows = np.nonzero(mask)[0] + window[0].start
        pix[rows % 4 < 2] -= 70
    img[mask] = pix
    lab[mask] = cls


def generate(index: int, split: str, setting: str = "context", size: int = 176, data_seed: int = 0):
    """One (image HxWx3 uint8, label HxW uint8) pair; the same arguments give the same pair.
    Everything is drawn from one generator, in this order: noise, tint, band, keys, squares,
    discs (the pixels depend on it)."""
    rng = np.random.default_rng([data_seed, SPLIT_IDS[split], index])
    s = size / 176
    band, margin = round(BAND * s), round(MARGIN * s)
    img = 70 + 12 * rng.standard_normal((size, size, 3), np.float32)
    img += 10 * rng.standard_normal((1, 1, 3), np.float32)  # per-image tint, same for all classes
    lab = np.zeros((size, size), np.uint8)
    warm = rng.random() < 0.5
    top = rng.random() < 0.5  # band on top, objects at the bottom, or the reverse
    band_rows = slice(0, band) if top else slice(size - band, size)
    zone = (band + margin, size) if top else (0, size - band - margin)
    full = np.ones((band, size), bool)
    colour, cls = (WARM, 5) if warm else (COOL, 6)
    _paint(img, lab, (band_rows, slice(0, size)), full, full, colour, cls, rng)
    hues, solid = _keys(img, lab, rng, band_rows, s)

    def place(extent: float) -> tuple[float, float]:
        lo, hi = zone[0] + extent, zone[1] - extent
        return rng.uniform(lo, max(lo, hi)), rng.uniform(extent, size - extent)

    stripes = setting == "local"
    _squares(img, lab, rng, place, s, 1 if warm else 2, stripes and not warm)
    for hue, is_solid in zip(hues, solid):  # three discs per hue
        for _ in range(3):
            r = float(np.exp(rng.uniform(np.log(6 * s), np.log(24 * s))))
            cy, cx = place(r + 1)
            win = (
                slice(max(int(cy - r) - 2, 0), min(int(cy + r) + 3, size)),
                slice(max(int(cx - r) - 2, 0), min(int(cx + r) + 3, size)),
            )
            ring, mask = _disc(win, cy, cx, r + 1), _disc(win, cy, cx, r)
            cls = 3 if is_solid else 4
            _paint(img, lab, win, mask, ring, HUES[hue], cls, rng, stripes and not is_solid)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def _keys(img, lab, rng, band_rows: slice, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Two key patches in the band: one hue each, solid or checked, drawn independently;
    returns (the two hues, whether each is solid)."""
    size, band = img.shape[0], band_rows.stop - band_rows.start
    hues = rng.choice(len(HUES), size=2, replace=False)
    solid = rng.random(2) < 0.5
    kh, kw = band - round(8 * s), round(44 * s)
    slots = rng.permutation(3)[:2]  # three horizontal slots, two used
    y0 = band_rows.start + (band - kh) // 2
    for hue, is_solid, slot in zip(hues, solid, slots):
        x0 = round((slot + 0.5) * size / 3 - kw / 2 + rng.integers(-6, 7) * s)
        win = (slice(y0, y0 + kh), slice(x0, x0 + kw))
        key = np.ones((kh, kw), bool)
        _paint(img, lab, win, key, key, HUES[hue], 7, rng)
        if not is_solid:  # checked: dark 4x4 checks over the hue
            yy, xx = np.ogrid[:kh, :kw]
            img[win][(yy // 4 + xx // 4) % 2 == 1] *= 0.3
    return hues, solid


def _squares(img, lab, rng, place, s: float, cls: int, stripes: bool) -> None:
    """Four grey squares of class `cls` at several scales, placed in the object zone."""
    size = img.shape[0]
    for _ in range(4):
        side = float(np.exp(rng.uniform(np.log(12 * s), np.log(48 * s))))
        cy, cx = place(side / 2 + 1)
        y0, x0 = round(cy - side / 2), round(cx - side / 2)
        y1, x1 = y0 + round(side), x0 + round(side)
        win = (slice(max(y0 - 1, 0), min(y1 + 1, size)), slice(max(x0 - 1, 0), min(x1 + 1, size)))
        ring = np.ones((win[0].stop - win[0].start, win[1].stop - win[1].start), bool)
        mask = np.zeros_like(ring)
        mask[y0 - win[0].start : y1 - win[0].start, x0 - win[1].start : x1 - win[1].start] = True
        _paint(img, lab, win, mask, ring, (SQUARE_GREY,) * 3, cls, rng, stripes)


def local_bound_labels(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The best a purely local classifier can do in the context setting: every label right,
    except that each ambiguous pair is resolved by a fair coin per pixel (the class is
    independent of the local window, and with equal class frequencies a coin maximises the
    pair's summed IoU: p/(1+p) + (1-p)/(2-p) peaks at p = 1/2, 1/3 each)."""
    out = label.copy()
    for a, b in AMBIGUOUS_PAIRS:
        pair = (label == a) | (label == b)
        out[pair] = np.where(rng.random(int(pair.sum())) < 0.5, a, b)
    return out


def local_bound_miou(setting: str = "context", n: int = 200, size: int = 176, data_seed: int = 0):
    """mIoU of the best purely local classifier on the first n validation images."""
    import torch

    from danet.metrics import ConfusionMatrix

    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(len(CLASSES), IGNORE)
    for i in range(n):
        label = generate(i, "val", setting, size, data_seed)[1]
        pred = local_bound_labels(label, rng) if setting == "context" else label
        cm.update(torch.from_numpy(pred).long(), torch.from_numpy(label).long())
    return cm.miou()
