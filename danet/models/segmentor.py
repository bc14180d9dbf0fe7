"""Backbone + DANet head, logits upsampled to the input size (bilinear, align_corners=True)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from danet.config import ModelConfig
from danet.models.backbone import Backbone
from danet.models.head import DANetHead


class Segmentor(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = Backbone(cfg.backbone, cfg.pretrained, cfg.multi_grid)
        self.head = DANetHead(
            self.backbone.out_channels,
            num_classes,
            cfg.variant,
            cfg.variant_opts,
            cfg.head_channels or self.backbone.head_channels,
            cfg.head,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        outs = self.head(self.backbone(x))
        return [F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outs]

    def param_groups(self, lr: float, head_lr_mult: float) -> list[dict]:
        return [
            {"params": list(self.backbone.parameters()), "lr": lr, "initial_lr": lr},
            {
                "params": list(self.head.parameters()),
                "lr": lr * head_lr_mult,
                "initial_lr": lr * head_lr_mult,
            },
        ]
