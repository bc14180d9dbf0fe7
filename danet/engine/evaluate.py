"""Evaluation with the dataset-level confusion matrix, in each of the configured modes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from danet import IGNORE_INDEX
from danet.config import EvalConfig
from danet.engine import speed
from danet.engine.inference import predict
from danet.metrics import ConfusionMatrix
from danet.utils import progress_bar


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: torch.device,
    cfg: EvalConfig | None = None,
    default_crop: int | tuple[int, int] = 0,
    ignore_index: int = IGNORE_INDEX,
    save_dir: Path | None = None,
    num_workers: int = 0,
    amp: str = "off",
    progress: bool = False,
) -> dict[str, ConfusionMatrix]:
    """One confusion matrix per mode of cfg.modes, from the main (fused) output; each image
    is loaded once for all modes. `save_dir` receives the first mode's predictions as PNGs in
    the dataset's own label encoding (Cityscapes: labelIds, as its official evaluation wants).
    Eval mode is restored to what it was; `amp` is the run's train.amp (danet.engine.speed).
    `progress`: a bar on stderr of the images done, with each mode's seconds per image (off
    inside training, whose own bar runs; `danet eval` turns it on)."""
    cfg = cfg or EvalConfig()
    was_training = model.training
    model.eval()
    cms = {mode: ConfusionMatrix(num_classes, ignore_index) for mode in cfg.modes}
    # Images of one size (the built-in dataset) go through in batches; others one by one.
    batch = 8 if getattr(dataset, "same_size", False) and cfg.modes == ("whole",) else 1
    seen = 0
    spent = dict.fromkeys(cfg.modes, 0.0)  # seconds in each mode, for the bar
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=num_workers)
    bar = progress_bar(len(dataset), f"eval {','.join(cfg.modes)}", progress, unit="img")
    with bar:
        for img, lab in loader:
            img = img.to(device)
            for mode in cfg.modes:
                start = time.perf_counter()
                with speed.autocast(amp, device):
                    # .cpu() waits for the device, so the time is the mode's own
                    # max(1).indices: argmax (first maximum), several times faster on a CPU
                    pred = predict(model, img, mode, cfg, default_crop).max(1).indices.cpu()
                spent[mode] += time.perf_counter() - start
                cms[mode].update(pred, lab)
                if save_dir is not None and mode == cfg.modes[0]:
                    _save(pred, dataset, seen, save_dir)
            seen += len(img)
            bar.set_postfix_str(_per_image(spent, seen), refresh=False)
            bar.update(len(img))
    model.train(was_training)
    return cms


def _per_image(spent: dict[str, float], seen: int) -> str:
    return ", ".join(f"{mode} {s / seen:.3g} s/img" for mode, s in spent.items())


def _save(pred: torch.Tensor, dataset: Dataset, first: int, save_dir: Path) -> None:
    save_dir.mkdir(parents=True, exist_ok=True)
    to_raw = dataset.raw_ids() if hasattr(dataset, "raw_ids") else np.arange(256, dtype=np.uint8)
    for i, p in enumerate(pred.numpy().astype(np.uint8)):
        name = dataset.name_of(first + i) if hasattr(dataset, "name_of") else f"{first + i:06d}"
        Image.fromarray(to_raw[p]).save(save_dir / f"{name}.png")


def metrics_dict(cm: ConfusionMatrix, class_names) -> dict:
    iou = cm.iou().tolist()
    return {
        "miou": cm.miou(),
        "pixel_accuracy": cm.pixel_accuracy(),
        "per_class_iou": {name: (None if v != v else v) for name, v in zip(class_names, iou)},
    }
