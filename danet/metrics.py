"""Dataset-level confusion matrix: intersections and unions summed over all images."""

from __future__ import annotations

import torch

from danet import IGNORE_INDEX


class ConfusionMatrix:
    """Rows are ground truth, columns predictions; pixels labelled `ignore_index` are skipped.

    Raw counts are kept (int64) so matrices from several processes or chunks can be summed
    (`merge`, or `all_reduce` on `.mat`) before IoU is computed.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}"
            )
        pred, target = (
            pred.flatten().to("cpu", torch.int64),
            target.flatten().to("cpu", torch.int64),
        )
        n = self.num_classes
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]  # a prediction on an ignored pixel never counts
        # out of range, target * n + pred would count in another cell (pred -1: the last cell
        # of the previous row), so either is an error, not a silent miscount
        label_note = f" and is not ignore_index {self.ignore_index}"
        for what, values, note in (("prediction", pred, ""), ("label", target, label_note)):
            if values.numel():
                low, high = (int(v) for v in torch.aminmax(values))
                if low < 0 or high >= n:
                    bad = low if low < 0 else high
                    raise ValueError(f"a {what} of {bad} lies outside [0, {n}){note}")
        self.mat += torch.bincount(target * n + pred, minlength=n * n).view(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.mat += other.mat
        return self

    def iou(self) -> torch.Tensor:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        mat = self.mat.double()
        inter = mat.diag()
        union = mat.sum(0) + mat.sum(1) - inter
        return torch.where(
            union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan"))
        )

    def miou(self) -> float:
        """Mean IoU over the classes that occur (in ground truth or prediction)."""
        return float(self.iou().nanmean())

    def pixel_accuracy(self) -> float:
        total = self.mat.sum()
        return float(self.mat.diag().sum().double() / total) if total > 0 else float("nan")
