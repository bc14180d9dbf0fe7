"""Backbone + DANet head, logits upsampled to the input size (bilinear, align_corners=True)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from danet.config import ModelConfig
from danet.models.backbone import Backbone
from danet.models.head import DANetHead

STRIDE = 8  # every backbone's output stride: the head sees 1/8 of the input's size


def upsample(outputs: list[torch.Tensor], size) -> list[torch.Tensor]:
    return [F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outputs]


class Segmentor(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = Backbone(
            cfg.backbone, cfg.pretrained, cfg.multi_grid, cfg.backbone_attention
        )
        self.head = DANetHead(
            self.backbone.out_channels,
            num_classes,
            cfg.variant,
            cfg.variant_opts,
            cfg.head_channels or self.backbone.head_channels,
            cfg.head,
        )
        self.frozen_backbone = cfg.freeze_backbone
        if self.frozen_backbone:  # the weights stay as loaded: no gradients, BN statistics fixed
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return upsample(self.head(self.backbone(x)), x.shape[-2:])

    def train(self, mode: bool = True) -> Segmentor:
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    def param_groups(self, lr: float, head_lr_mult: float) -> list[dict]:
        head = {
            "params": list(self.head.parameters()),
            "lr": lr * head_lr_mult,
            "initial_lr": lr * head_lr_mult,
        }
        if self.frozen_backbone:
            return [head]
        return [{"params": list(self.backbone.parameters()), "lr": lr, "initial_lr": lr}, head]


class HeadOnFeatures(nn.Module):
    """What trains under the frozen-feature protocol: a model's head on cached backbone
    features (B, C, h, w), its logits upsampled as the model does to the input the features
    came from, (STRIDE h, STRIDE w), the size of the label crop aligned with them."""

    def __init__(self, head: DANetHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        h, w = features.shape[-2:]
        return upsample(self.head(features), (STRIDE * h, STRIDE * w))
