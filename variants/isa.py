"""Interlaced sparse self-attention (ISA), Huang et al., Interlaced Sparse Self-Attention for
Semantic Segmentation, IJCV 2021. Paper: https://arxiv.org/abs/1907.12273.

Dense self-attention over N positions is factorised into two sparse ones. With the map cut
into blocks of dh x dw positions: the long-range step attends among the positions that share
an offset inside their block (one group per offset, spaced dh and dw apart), then the
short-range step attends inside each block. Each step is the authors' self-attention block:
query and key are two (1x1 conv + BN + ReLU) to C/2 (separate weights), the value a 1x1 conv
to C, softmax(q k^T / sqrt(C/2)) over keys, then a 1x1 conv + BN + ReLU back to C. The module's
output is conv1x1 + BN + ReLU of [x, context] concatenated, as the authors' ISA_Module.

Matches openseg-group/openseg.pytorch `lib/models/modules/isa_block.py` (ISA_Module with one
down factor, as their ISANet: key C/2, value C, factor 8 x 8); tests/fixtures/known_answers/
isa.pt holds their output and input gradient. Caveats:
- A size not divisible by the factor is zero-padded (the excess split between both sides, as
  the authors do) and the padded positions take part in attention as keys, as there; the
  output is cropped back. At 1 x 1 the map is padded to 8 x 8.
- Not residual: the output is conv + BN + ReLU of [x, context], not the identity at start.
  `dropout` (after the last ReLU) is the authors' ISANet value 0.05.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU()]


class SelfAttentionBlock(nn.Module):
    """The authors' SelfAttentionBlock2D: scaled dot-product attention over all positions of
    its input, then a projection (conv + BN + ReLU) back to `channels`."""

    def __init__(self, channels: int, key: int, value: int) -> None:
        super().__init__()
        self.key_channels = key
        self.f_key = nn.Sequential(*conv_bn_relu(channels, key), *conv_bn_relu(key, key))
        self.f_query = nn.Sequential(*conv_bn_relu(channels, key), *conv_bn_relu(key, key))
        self.f_value = nn.Conv2d(channels, value, 1, bias=False)
        self.W = nn.Sequential(*conv_bn_relu(value, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.f_query(x).flatten(2).transpose(1, 2)  # B x N x Ck
        k = self.f_key(x).flatten(2)  # B x Ck x N
        v = self.f_value(x).flatten(2)  # B x Cv x N
        sim = torch.softmax(torch.bmm(q, k) * self.key_channels**-0.5, dim=-1)
        context = torch.bmm(v, sim.transpose(1, 2))  # B x Cv x N
        return self.W(context.view(b, -1, h, w))


class InterlacedSparseAttention(nn.Module):
    """Long-range attention among interlaced groups, then short-range inside dh x dw blocks;
    out = conv_bn_relu([x, context])."""

    def __init__(
        self,
        channels: int,
        factor_h: int = 8,
        factor_w: int = 8,
        reduction: int = 2,
        dropout: float = 0.05,
    ) -> None:
        super().__init__()
        key = max(channels // reduction, 1)
        self.factor = (factor_h, factor_w)
        self.long_range = SelfAttentionBlock(channels, key, channels)
        self.short_range = SelfAttentionBlock(channels, key, channels)
        self.fuse = nn.Sequential(*conv_bn_relu(2 * channels, channels), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        dh, dw = self.factor
        gh, gw = math.ceil(h / dh), math.ceil(w / dw)  # blocks along each axis
        ph, pw = gh * dh - h, gw * dw - w
        feats = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)) if ph or pw else x
        # position (i * dh + a, j * dw + b): block (i, j), offset (a, b)
        feats = feats.view(n, c, gh, dh, gw, dw)
        # long range: one group per offset (a, b), over all blocks
        long = feats.permute(0, 3, 5, 1, 2, 4).reshape(n * dh * dw, c, gh, gw)
        long = self.long_range(long).view(n, dh, dw, c, gh, gw)
        # short range: one group per block (i, j), over its offsets
        short = long.permute(0, 4, 5, 3, 1, 2).reshape(n * gh * gw, c, dh, dw)
        short = self.short_range(short).view(n, gh, gw, c, dh, dw)
        context = short.permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * dh, gw * dw)
        context = context[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return self.fuse(torch.cat([x, context], dim=1))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
