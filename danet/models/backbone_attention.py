"""Attention modules inserted into the stages of a timm ResNet backbone
(config key `model.backbone_attention`, danet.placement).

- where=block: in every residual block of the stage, after its last conv + BN and before the
  residual sum, as SE (Hu et al., CVPR 2018, Fig. 3), CBAM (Woo et al., ECCV 2018, Fig. 3),
  GCNet (Cao et al., ICCVW 2019, Fig. 4(d)) and ECA-Net place them. timm's BasicBlock and
  Bottleneck (timm 1.0.31, timm/models/resnet.py) apply their `se` slot exactly there, so
  the module goes into that slot: the blocks' code and parameter names stay timm's.
- where=stage: after the stage's last block, as a child `attn` of the stage's Sequential (the
  Non-local paper, Wang et al., CVPR 2018, Sec. 4, adds its blocks after residual blocks).

The modules are inserted after the backbone's weights are loaded, so a ResNet weights file
(which has no such tensors) loads in full and each module keeps its own initialisation: GC
starts as the identity (its last conv is zero, as in GCNet's code), Non-local with its
zero-initialised BN scale; SE, CBAM and ECA start as gates near 0.5, as in their papers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

import variants
from danet.errors import DanetError

SLOT = "se"  # timm's ResNet blocks' attention slot (None when the model has no attn_layer)
STAGE_CHILD = "attn"


def stages_of(body: nn.Module) -> dict[int, nn.Sequential]:
    """{1: layer1, ...}: the ResNet stages a timm feature extractor has (a cut one fewer)."""
    return {
        i: stage
        for i in range(1, 5)
        if isinstance(stage := getattr(body, f"layer{i}", None), nn.Sequential)
    }


def _channels(module: nn.Module) -> int:
    """Output channels of a residual block or stage: its last BatchNorm's width."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def insert(body: nn.Module, spec: Mapping[str, Any], backbone: str) -> list[str]:
    """Put spec's variant into the chosen stages of `body`, in place; returns the inserted
    modules' dotted names in `body`. A stage or block the backbone lacks is a DanetError."""
    stages = stages_of(body)
    missing = [s for s in spec["stages"] if s not in stages]
    if missing:
        raise DanetError(
            f"model.backbone_attention.stages {list(spec['stages'])}: backbone '{backbone}' has "
            f"no ResNet stage {missing[0]}; its stages: {sorted(stages) or 'none (not a ResNet)'}"
        )
    names = []
    for s in spec["stages"]:
        stage = stages[s]
        if spec["where"] == "stage":
            stage.add_module(STAGE_CHILD, create(spec, _channels(stage)))
            names.append(f"layer{s}.{STAGE_CHILD}")
            continue
        for i, block in enumerate(stage):
            if getattr(block, SLOT, False) is not None:  # absent, or already holding a module
                raise DanetError(
                    f"model.backbone_attention: block layer{s}.{i} of '{backbone}' has no free "
                    "attention slot; use where=stage"
                )
            setattr(block, SLOT, create(spec, _channels(block)))
            names.append(f"layer{s}.{i}.{SLOT}")
    return names


def create(spec: Mapping[str, Any], channels: int) -> nn.Module:
    """spec's variant for `channels` channels; an option error names this key."""
    try:
        return variants.create(spec["variant"], channels, **spec["opts"])
    except DanetError as e:  # the registry names the head's key; these options are elsewhere
        raise DanetError(
            str(e).replace("model.variant_opts", "model.backbone_attention.opts")
        ) from None
