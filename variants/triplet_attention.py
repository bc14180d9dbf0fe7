"""Triplet attention, Misra et al., Rotate to Attend: Convolutional Triplet Attention Module,
WACV 2021.

Paper: https://arxiv.org/abs/2010.03045. Authors' code: github.com/landskape-ai/triplet-attention,
`triplet_attention.py` (`TripletAttention`, commit 2cf02fb). Three branches each gate x along
one pair of its axes: the input is "rotated" so that one axis plays the channel role, reduced
over it by Z-pool (max and mean stacked as 2 maps), a k x k conv (2 -> 1, no bias) + BN +
sigmoid gives a gate over the other two axes. Branches: (C, W) pooled over H, (H, C) pooled
over W, and (H, W) pooled over C (the CBAM spatial gate); out = (x g_hw + x g_cw + x g_hc) / 3.

The authors permute x, gate the permuted copy and permute back; here each Z-pool reduces x
over its axis in place and only the small gate is permuted, the same numbers without three
copies of x. Parameter names (cw, hc, hw, each .conv.conv and .conv.bn) are theirs, so their
checkpoints load; tests/fixtures/known_answers/triplet.pt holds their module's output.

Caveats: a gate, not a residual block (at init about x / 2). The (C, W) and (H, C) convs slide
over the channel axis too, with zero padding: channel order matters, as in the paper. The BN
follows the authors (momentum 0.01); the (H, W) branch's BN sees B * H * W values, so training
needs B * H * W >= 2 (eval mode has no limit), like CBAM.
"""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct
from torch import nn


class ZPoolGate(nn.Module):
    """sigmoid(BN(conv_kxk([max, mean] over `dim`))) of a (B, C, H, W) tensor, as a gate
    broadcastable to it. The pooled maps are laid out as the authors' rotated tensor."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.dim = dim
        # timm's conv + BN block: the authors' BasicConv (same names, no bias, BN momentum)
        self.conv = ConvNormAct(
            2, 1, kernel_size, apply_act=False, norm_kwargs=dict(momentum=0.01)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([x.amax(self.dim), x.mean(self.dim)], dim=1)
        if self.dim == 3:  # pooled over W: the authors' rotated layout is (H, C)
            pooled = pooled.transpose(2, 3)
        gate = torch.sigmoid(self.conv(pooled))  # B x 1 x (the two kept axes)
        if self.dim == 2:  # (C, W) -> B x C x 1 x W
            return gate.transpose(1, 2)
        if self.dim == 3:  # (H, C) -> B x C x H x 1
            return gate.permute(0, 3, 2, 1)
        return gate  # (H, W): B x 1 x H x W


class TripletAttention(nn.Module):
    """Triplet attention (attends over both): the mean of x gated over (H, W), (C, W) and
    (H, C). Options: kernel_size (odd; 7 in the paper), no_spatial (drop the (H, W) branch,
    the authors' ablation: the mean of the other two)."""

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False) -> None:
        super().__init__()
        self.channels, self.no_spatial = channels, no_spatial
        self.cw = ZPoolGate(2, kernel_size)  # pooled over H
        self.hc = ZPoolGate(3, kernel_size)  # pooled over W
        self.hw = None if no_spatial else ZPoolGate(1, kernel_size)  # pooled over C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hw is None:
            return 1 / 2 * (x * self.cw(x) + x * self.hc(x))
        return 1 / 3 * (x * self.hw(x) + x * self.cw(x) + x * self.hc(x))
