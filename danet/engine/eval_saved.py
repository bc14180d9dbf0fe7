"""`danet eval`: evaluate a saved model, in any of the evaluation modes.

TARGET is a run folder (its newest readable checkpoint), a checkpoint inside one (the run's
config.yaml applies), or any other weights file, e.g. the released DANet-101 in
PyTorch-Encoding's layout (danet/models/convert.py); then --config and key=value overrides
describe the model and data. Overrides apply in every case (data.root on another machine).
"""

from __future__ import annotations

import sys
from pathlib import Path

from danet import config as C
from danet.checks import check_config
from danet.data import build_dataset
from danet.engine import checkpoint, speed
from danet.engine.evaluate import evaluate, metrics_dict
from danet.engine.step import pick_device
from danet.errors import DanetError
from danet.models import Segmentor
from danet.models.convert import load_weights
from danet.run_folder import CONFIG


def _run_dir_of(target: Path) -> Path | None:
    run_dir = target if target.is_dir() else target.parent.parent
    return run_dir if (run_dir / CONFIG).is_file() else None


def load_saved(
    target: Path, config_file: str | None = None, overrides: list[str] | None = None
) -> tuple[C.Config, Segmentor, int | None, str]:
    """(config, model with the weights, iteration or None, weights layout) of a saved model."""
    if not target.exists():
        raise DanetError(f"{target}: not found; give a run folder or a checkpoint file")
    run_dir = _run_dir_of(target)
    if target.is_dir() and run_dir is None:
        raise DanetError(f"{target}/config.yaml: not found; give a run folder made by danet train")
    base = config_file or (run_dir / CONFIG if run_dir else None)
    if base is None and not overrides:
        raise DanetError(
            f"{target} is not inside a run folder; give --config and/or key=value overrides "
            "for the model and data (the released DANet-101: model.backbone=resnet101 "
            "model.multi_grid=[4,8,16] data.name=cityscapes data.root=...)"
        )
    cfg = C.build(base, overrides)
    check_config(cfg)
    from danet.data import num_classes

    model = Segmentor(cfg.model, num_classes(cfg.data))
    if target.is_dir():
        skipped: list[tuple[Path, str]] = []
        state = checkpoint.latest(target, on_skip=lambda path, why: skipped.append((path, why)))
        if state is None:
            newest = f" ({skipped[0][1]})" if skipped else ""
            raise DanetError(
                f"{target}: no readable checkpoint in {checkpoint.ckpt_dir(target)}{newest}"
            )
        for message in checkpoint.skip_warnings(skipped, state, use="evaluating"):
            print(f"warning: {message}", file=sys.stderr)
        model.load_state_dict(state["model"])
        return cfg, model, state["iteration"], "danet-bench"
    layout = load_weights(model, target)
    iteration = checkpoint.load(target).get("iteration") if layout == "danet-bench" else None
    return cfg, model, iteration, layout


def evaluate_saved(
    target: Path,
    split: str = "val",
    modes: list[str] | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    save_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """The metrics of a saved model in each mode; `progress`: a bar of the images done on
    stderr (danet eval's; the whole evaluation can take minutes)."""
    extra = list(overrides or [])
    if modes:
        extra.append(f"eval.modes=[{','.join(modes)}]")
    cfg, model, iteration, layout = load_saved(target, config_file, extra)
    # whole images with the evaluation transform on either split (not training's random crops)
    dataset = build_dataset(
        cfg.data, "train" if split == "train" else "val", cfg.seed, transform="eval"
    )
    device = pick_device(cfg.train.device)
    cms = evaluate(
        speed.prepare(model.to(device), cfg.train), dataset, len(dataset.classes), device,
        cfg.eval, cfg.data.crop_size, dataset.ignore_index, save_dir, cfg.data.num_workers,
        cfg.train.amp, progress,
    )
    by_mode = {mode: metrics_dict(cm, dataset.classes) for mode, cm in cms.items()}
    first = by_mode[cfg.eval.modes[0]]
    return {
        "iteration": iteration,
        "weights": str(target),
        "layout": layout,
        "split": split,
        **first,
        "eval_mode": cfg.eval.modes[0],
        "eval": by_mode,
    }
