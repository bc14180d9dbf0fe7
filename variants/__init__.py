"""Attention registry: every variant drops into the same (B, C, H, W) -> (B, C, H, W) slot.

`available()` lists the names, `create(name, channels, **opts)` builds one (its options checked
by name, type and range in `check_options`), `info(name)` gives its metadata. A composite
variant (DANet's dual module) also names the single-module branches that the DANet head places
in parallel (`info(name).branches`).
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from danet.config import coerce, type_name
from danet.errors import DanetError, did_you_mean, unknown_choice
from variants.ccnet import CrissCross
from variants.danet import CAM, PAM, DualAttention
from variants.efficient_attention import EfficientAttention
from variants.emanet import EMAttention
from variants.non_local import NonLocal
from variants.sagan import SelfAttention
from variants.timm_attention import CBAM, ECA, GC, SE


@dataclass(frozen=True)
class VariantInfo:
    name: str
    factory: Callable[..., nn.Module]
    family: str
    attends: str  # what it mixes information over: "nothing", "positions", "channels", "both"
    cost: str  # multiply-adds of the attention itself, in N = H*W and C
    paper: str
    branches: tuple[str, ...]  # the head's parallel branches; a single module is its own branch


class Identity(nn.Module):
    """No attention: the head reduces to the dilated-FCN baseline."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x


DANET = "Fu et al., Dual Attention Network for Scene Segmentation, CVPR 2019"
_VARIANTS = (
    VariantInfo("none", Identity, "baseline", "nothing", "0", "dilated FCN", ("none",)),
    VariantInfo("pam", PAM, "danet", "positions", "N^2 (C/8 + C) + 1.25 N C^2", DANET, ("pam",)),
    VariantInfo("cam", CAM, "danet", "channels", "2 N C^2", DANET, ("cam",)),
    VariantInfo("danet", DualAttention, "danet", "both", "pam + cam", DANET, ("pam", "cam")),
    VariantInfo(
        "sagan",
        SelfAttention,
        "self-attention",
        "positions",
        "N M (C/8 + C/2) + 1.25 N C^2, M = N/4 pooled keys",
        "Zhang et al., Self-Attention Generative Adversarial Networks, ICML 2019",
        ("sagan",),
    ),
    VariantInfo(
        "nonlocal",
        NonLocal,
        "non-local",
        "positions",
        "N^2 C + 2 N C^2",
        "Wang et al., Non-local Neural Networks, CVPR 2018",
        ("nonlocal",),
    ),
    VariantInfo(
        "ccnet",
        CrissCross,
        "criss-cross",
        "positions (row and column)",
        "R (1.125 N (H+W) C + 1.25 N C^2)",
        "Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation, ICCV 2019",
        ("ccnet",),
    ),
    VariantInfo(
        "se",
        SE,
        "gating",
        "channels",
        "2 N C + C^2/8",
        "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
        ("se",),
    ),
    VariantInfo(
        "cbam",
        CBAM,
        "gating",
        "both",
        "6 N C + 98 N + C^2/4",
        "Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018",
        ("cbam",),
    ),
    VariantInfo(
        "eca",
        ECA,
        "gating",
        "channels",
        "2 N C + k C",
        "Wang et al., ECA-Net: Efficient Channel Attention, CVPR 2020",
        ("eca",),
    ),
    VariantInfo(
        "gc",
        GC,
        "global context",
        "both",
        "3 N C + C^2/4",
        "Cao et al., GCNet: Non-local Networks Meet Squeeze-Excitation Networks, ICCVW 2019",
        ("gc",),
    ),
    VariantInfo(
        "ema",
        EMAttention,
        "expectation-maximization",
        "positions (via K bases)",
        "(2 T + 3) N C K + 2 N C^2, K = 64 bases, T = 3 steps",
        "Li et al., Expectation-Maximization Attention Networks, ICCV 2019",
        ("ema",),
    ),
    VariantInfo(
        "efficient",
        EfficientAttention,
        "linear attention",
        "positions (via C/2 x C/2 context)",
        "2 N d_k d_v + 2.5 N C^2, d = C/2",
        "Shen et al., Efficient Attention: Attention with Linear Complexities, WACV 2021",
        ("efficient",),
    ),
)
_REGISTRY: dict[str, VariantInfo] = {v.name: v for v in _VARIANTS}


def available() -> list[str]:
    """Registered names, the DANet ablation first (none, pam, cam, danet), then the others."""
    return list(_REGISTRY)


def info(name: str) -> VariantInfo:
    if name not in _REGISTRY:
        raise unknown_choice("variant", name, _REGISTRY)
    return _REGISTRY[name]


def options(name: str) -> dict[str, object]:
    """The keyword options a variant accepts, with their defaults."""
    params = inspect.signature(info(name).factory).parameters
    return {k: p.default for k, p in params.items() if k != "channels"}


def _unknown_option(name: str, key: str, valid) -> DanetError:
    listed = ", ".join(sorted(valid)) or "none"
    return DanetError(
        f"unknown option '{key}' for variant '{name}'{did_you_mean(key, valid)}; "
        f"valid options: {listed}"
    )


# Option values are checked here, for every variant, from the constructor's signature: the
# type from its annotation (else its default's type), and numbers must be positive (counts,
# reductions, ratios, widths, kernel sizes) unless this table gives another range.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # odd: timm pads a k-tap conv by k // 2 on both sides, so an even k changes the size
    "kernel_size": (lambda v: v >= 1 and v % 2 == 1, "a positive odd integer"),
    "spatial_kernel_size": (lambda v: v >= 1 and v % 2 == 1, "a positive odd integer"),
    "key_channels": (lambda v: v >= 0, "0 (half the input channels) or a positive integer"),
    "value_channels": (lambda v: v >= 0, "0 (half the input channels) or a positive integer"),
    "momentum": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),  # EMA's moving average of bases
    "beta": (math.isfinite, "a finite number"),  # ECA's offset in its kernel-size formula
}
def _option_types(name: str) -> dict[str, Any]:
    """Option -> its type: the constructor's annotation, else its default's type (Any)."""
    factory = info(name).factory
    hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    return {
        key: hints.get(key, Any if default is None else type(default))
        for key, default in options(name).items()
    }


def check_options(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The options of variant `name`, checked (names, types, ranges) and typed; a DanetError
    names the variant, the option, the value and what is valid."""
    types_ = _option_types(name)
    checked = {}
    for key, value in opts.items():
        if key not in types_:
            raise _unknown_option(name, key, types_)
        what = type_name(types_[key])
        try:  # the config's own type check (YAML's 1e-3 is a string, true is no number)
            value, ok = coerce(key, value, types_[key], name), True
        except DanetError:
            ok = False
        if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            positive = "a positive number" if "number" in what else "a positive integer"
            valid, what = RANGES.get(key, (lambda v: v > 0 and math.isfinite(v), positive))
            ok = bool(valid(value))
        if not ok:
            raise DanetError(
                f"variant '{name}': model.variant_opts.{key} must be {what}, got {value!r}"
            )
        checked[key] = value
    return checked


def create(name: str, channels: int, **opts) -> nn.Module:
    return info(name).factory(channels, **check_options(name, opts))


def branch_options(name: str, opts: dict) -> list[dict]:
    """Split a composite variant's options among its branches (each goes where it is accepted)."""
    branches = info(name).branches
    if branches == (name,):
        return [dict(opts)]
    per_branch: list[dict] = [{} for _ in branches]
    for key, value in opts.items():
        takers = [i for i, b in enumerate(branches) if key in options(b)]
        if not takers:
            raise _unknown_option(name, key, {k for b in branches for k in options(b)})
        for i in takers:
            per_branch[i][key] = value
    return per_branch
