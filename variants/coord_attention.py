"""Coordinate attention, Hou et al., Coordinate Attention for Efficient Mobile Network Design,
CVPR 2021.

Paper: https://arxiv.org/abs/2103.02907. Authors' code: github.com/houqb/CoordAttention,
`coordatt.py` (`CoordAtt`, commit 7619bea). The input is average-pooled along each axis
(C x H x 1 and C x 1 x W), the two strips are concatenated and go through one shared 1x1 conv
(C -> m, m = max(8, C // reduction)) + BN + h-swish, are split again, and a 1x1 conv per axis
(m -> C) + sigmoid gives two gates: out = x * a_w * a_h.

timm.layers.CoordAttn is the same computation with other defaults (no conv bias, m from timm's
own rounding of C * 2/3 / 16); the class below sets the authors' (bias, m = max(8, C // 32),
nn.Hardswish = their h_swish), so its parameter names (conv1, bn1, conv_h, conv_w) and
numbers are theirs: tests/fixtures/known_answers/coord.pt holds their module's output.

Caveats: a gate, not a residual block (at init about x / 4, never the identity). Its BN sees
B * (H + W) values per channel, so training works at any size, even 1x1 with batch 1.
"""

from __future__ import annotations

from timm.layers.coord_attn import CoordAttn  # not re-exported by timm.layers in 1.0.31
from torch import nn


class CoordAttention(CoordAttn):
    """Coordinate attention (attends over both): x * sigmoid(conv_w(f_w)) * sigmoid(conv_h(f_h))
    with [f_h, f_w] = h_swish(BN(conv1([mean_w x, mean_h x]))).

    Options: reduction (hidden width m = max(8, C // reduction), the authors' rule),
    rd_channels (an exact m, overriding it).
    """

    def __init__(self, channels: int, reduction: int = 32, rd_channels: int | None = None):
        super().__init__(
            channels,
            rd_channels=rd_channels or max(8, channels // reduction),
            bias=True,  # the authors' convs have biases (timm's default has none)
            act_layer=nn.Hardswish,  # x * relu6(x + 3) / 6, the authors' h_swish
            norm_layer=nn.BatchNorm2d,
            gate_layer="sigmoid",
        )
