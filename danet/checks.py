"""Semantic checks of a resolved config that need the registries (backbones, variants, data
layouts, eval modes, speed options). Cheap and free of training code, so a sweep checks every
run of a grid up front, before anything is launched.
"""

from __future__ import annotations

from collections.abc import Callable

import variants
from danet import config as C
from danet import placement, plugins
from danet.config import EVAL_MODES as MODES
from danet.data import check_data_config
from danet.data.transforms import check_scale_mode, pair
from danet.engine import speed
from danet.engine.inference import resize_to
from danet.errors import DanetError, unknown_choice
from danet.models import BACKBONES
from danet.models.backbone_attention import create as create_inserted
from danet.models.head import head_branches, num_outputs
from danet.models.segmentor import STRIDE
from danet.models.shipped_weights import IMAGENET, shipped_file

POSITIVE = (lambda v: v > 0, "positive")
NOT_NEGATIVE = (lambda v: v >= 0, "0 or positive")

# The range of every numeric key, checked before anything is written (a list or a
# (height, width) pair: each of its numbers). Every float is finite already (danet.config).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "data.image_size": POSITIVE,
    "data.crop_size": POSITIVE,
    "data.base_size": (lambda v: v >= 0, "0, a size, or (long, short)"),
    "train.iterations": POSITIVE,
    "train.batch_size": POSITIVE,
    "train.lr": POSITIVE,  # torch's SGD refuses a negative lr with a traceback; 0 learns nothing
    "train.head_lr_mult": POSITIVE,
    "train.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),  # 1 or more never forgets: diverges
    "train.weight_decay": NOT_NEGATIVE,
    "train.poly_power": NOT_NEGATIVE,
    "train.loss_weights": NOT_NEGATIVE,
    "train.checkpoint_every": POSITIVE,
    "train.log_every": POSITIVE,
    "train.threads": (lambda v: v >= 0, "0 (torch's default) or positive"),
    "eval.every": (lambda v: v >= 0, "0 (off) or positive"),
    "eval.crop_size": (lambda v: v >= 0, "positive or 0"),
    "eval.stride_rate": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "eval.scales": POSITIVE,
}


def check_config(cfg: C.Config) -> None:
    """Semantic checks that need the registries; cheap, so a sweep checks every run up front.
    Loads the config's plugins first (their variants join the registry)."""
    plugins.load(cfg.plugins)
    check_ranges(cfg)
    check_model(cfg)
    check_data_config(cfg.data)
    check_scale_mode(cfg.data.scale_mode, cfg.data.base_size)
    lo, hi = cfg.data.scale_range
    if not 0 < lo <= hi:
        raise DanetError(
            f"'data.scale_range' must be [low, high] with 0 < low <= high, got {[lo, hi]}"
        )
    check_eval_config(cfg.eval)
    check_frozen(cfg)
    check_backbone_attention(cfg.model)
    if cfg.model.pretrained == IMAGENET:
        shipped_file(cfg.model.backbone)  # one line when this backbone has no shipped weights
    if cfg.train.device not in ("auto", "cpu") and not cfg.train.device.startswith("cuda"):
        raise DanetError(f"'train.device' must be auto, cpu or cuda[:N], got '{cfg.train.device}'")
    # the device may be absent where a sweep is submitted: fp16 is refused here on cpu only
    speed.check(cfg.train, "cpu" if cfg.train.device == "cpu" else None)


def check_ranges(cfg: C.Config) -> None:
    """Each key of RANGES within its range: one line naming the key, the range and the value."""
    for key, (ok, what) in RANGES.items():
        value = C.get(cfg, key)
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if not all(ok(v) for v in numbers):
            shown = list(value) if isinstance(value, (list, tuple)) else value
            raise DanetError(f"'{key}' must be {what}, got {shown}")


def check_model(cfg: C.Config) -> None:
    """Backbone and variant names, the variant's options, and one loss weight per output."""
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
    outputs = num_outputs(branches)
    if len(cfg.train.loss_weights) < outputs:
        raise DanetError(
            f"'train.loss_weights' has {len(cfg.train.loss_weights)} weights; variant "
            f"'{cfg.model.variant}' has {outputs} outputs in this head (fused, then per branch)"
        )


def check_backbone_attention(model: C.ModelConfig) -> None:
    """model.backbone_attention (normal form: danet.placement): a registered variant other than
    none, its options, and stages that the backbone has as ResNet stages."""
    spec = model.backbone_attention
    if not spec:
        return
    key, name = placement.KEY, spec["variant"]
    valid = [v for v in variants.available() if v != "none"]
    if name not in valid:
        hint = "; leave the key empty for none" if name == "none" else ""
        raise DanetError(f"{unknown_choice(f'{key}.variant', name, valid)}{hint}")
    create_inserted(spec, 8)  # checks option names, types and ranges
    if not variants.is_builtin(name):  # a plugin: it must keep (B, C, H, W)
        variants.check_shape(name, spec["opts"])
    backbone = BACKBONES[model.backbone]
    # every ResNet here is timm's (layer1..layer4; `tiny` is cut after its stage 2)
    stages = range(1, backbone.stage + 1) if backbone.timm_name.startswith("resnet") else ()
    missing = [s for s in spec["stages"] if s not in stages]
    if missing:
        has = f"stages {list(stages)}" if stages else "no ResNet stages (not a ResNet)"
        raise DanetError(
            f"'{key}.stages' {spec['stages']}: backbone '{model.backbone}' has {has}; choose "
            "among them, or a ResNet backbone (e.g. model.backbone=resnet50)"
        )
    if model.freeze_backbone:
        raise DanetError(
            f"'{key}' with model.freeze_backbone=true would freeze untrained modules inside "
            "the backbone; train the backbone (model.freeze_backbone=false) or leave the key empty"
        )


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
    if not ev.scales:
        raise DanetError("'eval.scales' is empty; give one or more positive numbers")
    resize_to(1, 1, ev.resize)  # raises on a malformed eval.resize
