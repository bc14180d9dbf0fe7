"""Semantic checks of a resolved config that need the registries (backbones, variants, data
layouts, eval modes, speed options). Cheap and free of training code, so a sweep checks every
run of a grid up front, before anything is launched.
"""

from __future__ import annotations

import variants
from danet import config as C
from danet import plugins
from danet.data import check_data_config
from danet.data.transforms import check_scale_mode, pair
from danet.engine import speed
from danet.engine.inference import MODES, resize_to
from danet.errors import DanetError, unknown_choice
from danet.models import BACKBONES
from danet.models.head import head_branches
from danet.models.segmentor import STRIDE
from danet.models.shipped_weights import IMAGENET, shipped_file


def check_config(cfg: C.Config) -> None:
    """Semantic checks that need the registries; cheap, so a sweep checks every run up front.
    Loads the config's plugins first (their variants join the registry)."""
    plugins.load(cfg.plugins)
    if cfg.model.backbone not in BACKBONES:
        raise unknown_choice("model.backbone", cfg.model.backbone, BACKBONES)
    if cfg.model.variant not in variants.available():
        raise unknown_choice("model.variant", cfg.model.variant, variants.available())
    branches = head_branches(cfg.model.variant, cfg.model.head)
    for branch, opts in zip(
        branches, variants.branch_options(cfg.model.variant, cfg.model.variant_opts)
    ):
        variants.create(branch, 8, **opts)  # checks option names, types and ranges
        if not variants.is_builtin(branch):  # a plugin: it must keep (B, C, H, W)
            variants.check_shape(branch, opts)
    check_data_config(cfg.data)
    positive = {
        "train.iterations": cfg.train.iterations,
        "train.batch_size": cfg.train.batch_size,
        "data.crop_size": min(pair(cfg.data.crop_size)),
        "data.image_size": cfg.data.image_size,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.log_every": cfg.train.log_every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise DanetError(f"'{key}' must be positive, got {value}")
    if cfg.eval.every < 0:
        raise DanetError(f"'eval.every' must be 0 (off) or positive, got {cfg.eval.every}")
    if min(pair(cfg.data.base_size)) < 0:
        raise DanetError(
            f"'data.base_size' must be 0, a size, or (long, short); got {cfg.data.base_size}"
        )
    check_scale_mode(cfg.data.scale_mode, cfg.data.base_size)
    lo, hi = cfg.data.scale_range
    if not 0 < lo <= hi:
        raise DanetError(
            f"'data.scale_range' must be [low, high] with 0 < low <= high, got {[lo, hi]}"
        )
    outputs = 3 if len(branches) == 2 else 1
    if len(cfg.train.loss_weights) < outputs:
        raise DanetError(
            f"'train.loss_weights' has {len(cfg.train.loss_weights)} weights; variant "
            f"'{cfg.model.variant}' has {outputs} outputs in this head (fused, then per branch)"
        )
    check_eval_config(cfg.eval)
    check_frozen(cfg)
    if cfg.model.pretrained == IMAGENET:
        shipped_file(cfg.model.backbone)  # one line when this backbone has no shipped weights
    if cfg.train.device not in ("auto", "cpu") and not cfg.train.device.startswith("cuda"):
        raise DanetError(f"'train.device' must be auto, cpu or cuda[:N], got '{cfg.train.device}'")
    # the device may be absent where a sweep is submitted: fp16 is refused here on cpu only
    speed.check(cfg.train, "cpu" if cfg.train.device == "cpu" else None)


def check_frozen(cfg: C.Config) -> None:
    """The frozen-feature protocol trains on crops of cached stride-8 feature maps."""
    if not cfg.model.freeze_backbone:
        return
    crop = pair(cfg.data.crop_size)
    if any(c % STRIDE for c in crop):
        raise DanetError(
            f"'data.crop_size' {list(crop)} must be a multiple of {STRIDE} with "
            "model.freeze_backbone=true (crops of the cached stride-8 features), e.g. "
            f"{[STRIDE * max(1, c // STRIDE) for c in crop]}"
        )
    if not cfg.model.pretrained:
        raise DanetError(
            "model.freeze_backbone=true with model.pretrained empty would train a head on "
            "random features; give model.pretrained=imagenet (effnet-lite*) or a weights file"
        )


def check_eval_config(ev: C.EvalConfig) -> None:
    if not ev.modes:
        raise DanetError("'eval.modes' is empty; give one or more of " + ", ".join(MODES))
    for mode in ev.modes:
        if mode not in MODES:
            raise unknown_choice("eval.modes entry", mode, MODES)
    if len(set(ev.modes)) != len(ev.modes):
        raise DanetError(f"'eval.modes' repeats a mode: {list(ev.modes)}")
    if not 0 < ev.stride_rate <= 1:
        raise DanetError(f"'eval.stride_rate' must be in (0, 1], got {ev.stride_rate}")
    if not ev.scales or min(ev.scales) <= 0:
        raise DanetError(f"'eval.scales' must be positive numbers, got {list(ev.scales)}")
    if min(pair(ev.crop_size)) < 0:
        raise DanetError(f"'eval.crop_size' must be positive or 0, got {ev.crop_size}")
    resize_to(1, 1, ev.resize)  # raises on a malformed eval.resize
