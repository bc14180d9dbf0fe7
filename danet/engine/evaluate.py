"""Whole-image evaluation with the dataset-level confusion matrix."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from danet.metrics import ConfusionMatrix


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: torch.device,
    batch_size: int = 8,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """Argmax of the main (fused) output on every whole image; eval mode restored after."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index)
    for img, lab in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(img.to(device))[0]
        cm.update(logits.argmax(1), lab)
    model.train(was_training)
    return cm


def metrics_dict(cm: ConfusionMatrix, class_names) -> dict:
    iou = cm.iou().tolist()
    return {
        "miou": cm.miou(),
        "pixel_accuracy": cm.pixel_accuracy(),
        "per_class_iou": {name: (None if v != v else v) for name, v in zip(class_names, iou)},
    }
