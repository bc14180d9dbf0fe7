"""Training and validation on cached backbone features (model.freeze_backbone; the cache is
danet.data.feature_cache).

A training item is a random crop of one image's feature map, from the image or its mirror
(data.flip), with the label crop aligned to it at the output stride: feature cells y..y+h of
the map cover label rows 8y..8(y+h). Crops are data.crop_size / 8 cells; a map smaller than
that is padded with zero features and ignored labels. The draws are seeded by (run seed,
draw), as the image datasets' augmentation, so a resumed run sees the samples an uninterrupted
one would.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from danet.data.feature_cache import Entry
from danet.data.sampler import seed_from
from danet.data.transforms import pair
from danet.metrics import ConfusionMatrix
from danet.models.segmentor import STRIDE, upsample


def _crop(array: np.ndarray, y: int, x: int, h: int, w: int, fill: float) -> torch.Tensor:
    """array[..., y:y+h, x:x+w] padded with `fill` where it runs past the array."""
    part = torch.from_numpy(np.array(array[..., y : y + h, x : x + w]))
    ph, pw = h - part.shape[-2], w - part.shape[-1]
    return F.pad(part, (0, pw, 0, ph), value=fill) if ph or pw else part


class FrozenTrainSet(Dataset):
    """(features crop (C, h, w) float32, label crop (8h, 8w) int64) items for training."""

    def __init__(self, plain: Entry, mirror: Entry | None, crop, seed: int, base: Dataset) -> None:
        ch, cw = pair(crop)
        self.cells = (ch // STRIDE, cw // STRIDE)
        self.plain, self.mirror, self.seed = plain, mirror, seed
        self.classes, self.ignore_index = base.classes, base.ignore_index

    def __len__(self) -> int:
        return len(self.plain)

    def __getitem__(self, item: int | tuple[int, int]):
        index, draw = item if isinstance(item, tuple) else (item, 0)
        gen = torch.Generator().manual_seed(seed_from(self.seed, draw))
        flip = self.mirror is not None and float(torch.rand((), generator=gen)) < 0.5
        entry = self.mirror if flip else self.plain
        h, w = (int(v) for v in entry.sizes[index, :2])
        fh, fw = self.cells
        y = int(torch.randint(max(h - fh, 0) + 1, (), generator=gen))
        x = int(torch.randint(max(w - fw, 0) + 1, (), generator=gen))
        lh, lw = (int(v) for v in entry.sizes[index, 4:])
        feats = _crop(entry.features[index, :, :h, :w], y, x, fh, fw, 0.0)
        label = _crop(entry.labels[index, :lh, :lw], STRIDE * y, STRIDE * x, STRIDE * fh,
                      STRIDE * fw, self.ignore_index)
        return feats, label.long()


@torch.inference_mode()
def evaluate_cached(
    model: nn.Module, entry: Entry, num_classes: int, ignore_index: int, device: torch.device,
    indices: range | None = None, batch: int = 16,
) -> ConfusionMatrix:
    """`whole` evaluation from cached features: the head's fused output upsampled as the model
    upsamples (to the input the features came from, align_corners=True), then to the label's
    size as danet.engine.inference.predict does (align_corners=False). Images of one size go
    through `batch` at a time."""
    from danet.engine.inference import resize_bilinear

    cm = ConfusionMatrix(num_classes, ignore_index)
    was_training = model.training
    model.eval()
    todo = list(indices if indices is not None else range(len(entry)))
    while todo:
        sizes = tuple(int(v) for v in entry.sizes[todo[0]])
        same = [i for i in todo[:batch] if tuple(int(v) for v in entry.sizes[i]) == sizes]
        taken = set(same)
        todo = [i for i in todo if i not in taken]
        h, w, ih, iw, lh, lw = sizes
        feats = torch.from_numpy(np.stack([entry.features[i, :, :h, :w] for i in same]))
        logits = upsample(model.head(feats.to(device))[:1], (ih, iw))[0]
        # max(1).indices: argmax with the same first-maximum rule, several times faster on a CPU
        pred = resize_bilinear(logits, (lh, lw), False).max(1).indices.cpu()
        labels = np.stack([entry.labels[i, :lh, :lw] for i in same]).astype(np.int64)
        cm.update(pred, torch.from_numpy(labels))
    model.train(was_training)
    return cm
