"""Attention registry: every variant drops into the same (B, C, H, W) -> (B, C, H, W) slot.

`available()` lists the names, `create(name, channels, **opts)` builds one, `info(name)` gives
its metadata. A composite variant (DANet's dual module) also names the single-module
branches that the DANet head places in parallel (`info(name).branches`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from danet.errors import DanetError, did_you_mean, unknown_choice
from variants.danet import CAM, PAM, DualAttention


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


DANET_PAPER = "Fu et al., Dual Attention Network for Scene Segmentation, CVPR 2019"
_REGISTRY: dict[str, VariantInfo] = {
    v.name: v
    for v in (
        VariantInfo("none", Identity, "baseline", "nothing", "0", "dilated FCN", ("none",)),
        VariantInfo(
            "pam",
            PAM,
            "danet",
            "positions",
            "N^2 (C/8 + C) + 2 N C^2 (1+1/8)",
            DANET_PAPER,
            ("pam",),
        ),
        VariantInfo("cam", CAM, "danet", "channels", "2 N C^2", DANET_PAPER, ("cam",)),
        VariantInfo(
            "danet", DualAttention, "danet", "both", "pam + cam", DANET_PAPER, ("pam", "cam")
        ),
    )
}


def available() -> list[str]:
    return sorted(_REGISTRY)


def info(name: str) -> VariantInfo:
    if name not in _REGISTRY:
        raise unknown_choice("variant", name, _REGISTRY)
    return _REGISTRY[name]


def options(name: str) -> dict[str, object]:
    """The keyword options a variant accepts, with their defaults."""
    params = inspect.signature(info(name).factory).parameters
    return {k: p.default for k, p in params.items() if k != "channels"}


def create(name: str, channels: int, **opts) -> nn.Module:
    valid = options(name)
    for key in opts:
        if key not in valid:
            listed = ", ".join(sorted(valid)) or "none"
            raise DanetError(
                f"unknown option '{key}' for variant '{name}'{did_you_mean(key, valid)}; "
                f"valid options: {listed}"
            )
    return info(name).factory(channels, **opts)


def branch_options(name: str, opts: dict) -> list[dict]:
    """Split a composite variant's options among its branches (each goes where it is accepted)."""
    branches = info(name).branches
    if branches == (name,):
        return [dict(opts)]
    per_branch: list[dict] = [{} for _ in branches]
    for key, value in opts.items():
        takers = [i for i, b in enumerate(branches) if key in options(b)]
        if not takers:
            valid = sorted({k for b in branches for k in options(b)})
            raise DanetError(
                f"unknown option '{key}' for variant '{name}'{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid)}"
            )
        for i in takers:
            per_branch[i][key] = value
    return per_branch
