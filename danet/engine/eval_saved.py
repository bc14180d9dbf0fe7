"""`danet eval`: whole-image evaluation of a saved checkpoint with its run's config."""

from __future__ import annotations

from pathlib import Path

import yaml

from danet import config as C
from danet.data import build_dataset
from danet.engine import checkpoint
from danet.engine.evaluate import evaluate, metrics_dict
from danet.engine.train import pick_device
from danet.errors import DanetError
from danet.models import Segmentor


def evaluate_saved(target: Path, split: str = "val") -> dict:
    run_dir = target if target.is_dir() else target.parent.parent
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise DanetError(f"{cfg_path}: not found; give a run folder made by danet train or sweep")
    cfg = C.from_dict(yaml.safe_load(cfg_path.read_text()) or {}, str(cfg_path))
    if target.is_dir():
        state = checkpoint.latest(run_dir)
        if state is None:
            raise DanetError(f"{run_dir}: no readable checkpoint in {checkpoint.ckpt_dir(run_dir)}")
    else:
        state = checkpoint.load(target)
    dataset = build_dataset(cfg.data, split, cfg.seed)
    model = Segmentor(cfg.model, len(dataset.classes))
    model.load_state_dict(state["model"])
    device = pick_device(cfg.train.device)
    cm = evaluate(
        model.to(device), dataset, len(dataset.classes), device, ignore_index=dataset.ignore_index
    )
    return {"iteration": state["iteration"], "split": split, **metrics_dict(cm, dataset.classes)}
