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
IGNORE = 255
BAND = 44  # band height in px at image_size 176; everything scales with image_size
MARGIN = 56  # px between the band and the object zone at image_size 176
WARM, COOL = (200, 90, 40), (40, 90, 200)
HUES = ((225, 215, 40), (40, 215, 215), (215, 40, 215), (60, 200, 60))
SQUARE_GREY = 165
SPLIT_IDS = {"train": 0, "val": 1}


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _paint(img, lab, mask, ring, color, cls, rng, stripes=False):
    lab[ring & ~mask] = IGNORE
    pix = np.asarray(color, np.float32) + rng.normal(0, 8, (int(mask.sum()), 3))
    if stripes:  # the control setting's local marker: darker every 4th row
        rows = np.nonzero(mask)[0]
        pix[rows % 4 < 2] -= 70
    img[mask] = pix
    lab[mask] = cls


def generate(index: int, split: str, setting: str = "context", size: int = 176, data_seed: int = 0):
    """One (image HxWx3 uint8, label HxW uint8) pair; the same arguments give the same pair."""
    rng = np.random.default_rng([data_seed, SPLIT_IDS[split], index])
    s = size / 176
    band, margin = round(BAND * s), round(MARGIN * s)
    img = rng.normal(70, 12, (size, size, 3)).astype(np.float32)
    img += rng.normal(0, 10, (1, 1, 3))  # per-image tint, the same for every class
    lab = np.zeros((size, size), np.uint8)
    warm = rng.random() < 0.5
    top = rng.random() < 0.5  # band on top, objects at the bottom, or the reverse
    band_rows = slice(0, band) if top else slice(size - band, size)
    zone = (band + margin, size) if top else (0, size - band - margin)

    band_mask = np.zeros((size, size), bool)
    band_mask[band_rows] = True
    _paint(img, lab, band_mask, band_mask, WARM if warm else COOL, 5 if warm else 6, rng)

    # Two key patches in the band: one hue each, solid or checked, drawn independently.
    hues = rng.choice(len(HUES), size=2, replace=False)
    solid = rng.random(2) < 0.5
    kh, kw = band - round(8 * s), round(44 * s)
    slots = rng.permutation(3)[:2]  # three horizontal slots, two used
    y0 = band_rows.start + (band - kh) // 2
    for hue, is_solid, slot in zip(hues, solid, slots):
        x0 = round((slot + 0.5) * size / 3 - kw / 2 + rng.integers(-6, 7) * s)
        key = np.zeros((size, size), bool)
        key[y0 : y0 + kh, x0 : x0 + kw] = True
        _paint(img, lab, key, key, HUES[hue], 7, rng)
        if not is_solid:  # checked: dark 4x4 checks over the hue
            yy, xx = np.nonzero(key)
            dark = ((yy - y0) // 4 + (xx - x0) // 4) % 2 == 1
            img[yy[dark], xx[dark]] *= 0.3

    def place(extent: float) -> tuple[float, float]:
        lo, hi = zone[0] + extent, zone[1] - extent
        return rng.uniform(lo, max(lo, hi)), rng.uniform(extent, size - extent)

    stripes = setting == "local"
    for _ in range(4):  # squares at several scales
        side = float(np.exp(rng.uniform(np.log(12 * s), np.log(48 * s))))
        cy, cx = place(side / 2 + 1)
        y0, x0 = round(cy - side / 2), round(cx - side / 2)
        y1, x1 = y0 + round(side), x0 + round(side)
        mask = np.zeros((size, size), bool)
        ring = mask.copy()
        mask[y0:y1, x0:x1] = True
        ring[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
        _paint(
            img, lab, mask, ring, (SQUARE_GREY,) * 3, 1 if warm else 2, rng, stripes and not warm
        )
    for hue, is_solid in zip(hues, solid):  # two discs per hue
        for _ in range(3):
            r = float(np.exp(rng.uniform(np.log(6 * s), np.log(24 * s))))
            cy, cx = place(r + 1)
            mask, ring = _disc(size, size, cy, cx, r), _disc(size, size, cy, cx, r + 1)
            _paint(
                img, lab, mask, ring, HUES[hue], 3 if is_solid else 4, rng, stripes and not is_solid
            )
    return np.clip(img, 0, 255).astype(np.uint8), lab


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
