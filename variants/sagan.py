"""SAGAN's self-attention block, Zhang et al., Self-Attention Generative Adversarial Networks,
ICML 2019. Paper: https://arxiv.org/abs/1805.08318.

Like DANet's PAM, every position aggregates values from all (here: pooled) positions with
softmax over keys of the unscaled query-key product, and the block is residual with a scalar
gamma initialised to 0, so it is the identity at initialisation. It differs from PAM in the
widths and the pooling: query/key C -> C/8, value C -> C/2 with an output 1x1 conv C/2 -> C,
and keys and values 2x2 max-pooled (stride 2), which cuts the attention map to N x N/4.

Caveats:
- The 1x1 convs have no bias, as in the authors' code; SAGAN also wraps them in spectral
  normalisation, a GAN-training stabiliser that is left out here (a segmentation head trains
  with BN around the slot instead).
- Pooling uses `ceil_mode=True`, so odd sizes keep their last row/column and a 1-pixel side
  stays 1 pixel; the paper only used even sizes, where this changes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from danet.errors import unknown_choice
from variants.attention_ops import IMPLS, attend


class SelfAttention(nn.Module):
    """Position attention over 2x2-pooled keys/values; out = gamma * o(attention) + x."""

    def __init__(
        self, channels: int, reduction: int = 8, pool: bool = True, impl: str = "auto"
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise unknown_choice("sagan impl", impl, IMPLS)
        qk, v = max(channels // reduction, 1), max(channels // 2, 1)
        self.pool, self.impl = pool, impl
        self.query_conv = nn.Conv2d(channels, qk, kernel_size=1, bias=False)
        self.key_conv = nn.Conv2d(channels, qk, kernel_size=1, bias=False)
        self.value_conv = nn.Conv2d(channels, v, kernel_size=1, bias=False)
        self.out_conv = nn.Conv2d(v, channels, kernel_size=1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def subsample(self, t: torch.Tensor) -> torch.Tensor:
        """Keys and values 2x2 max-pooled (pool=True); `danet visualize` pools as forward does."""
        # ceil_mode keeps a trailing odd row/column (and a size-1 side) instead of dropping it
        return F.max_pool2d(t, 2, stride=2, ceil_mode=True) if self.pool else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.query_conv(x).flatten(2).transpose(1, 2)  # B x N x C/8
        key = self.subsample(self.key_conv(x)).flatten(2)  # B x C/8 x M, M ~ N/4
        value = self.subsample(self.value_conv(x)).flatten(2)  # B x C/2 x M
        # softmax over the M keys of the unscaled query . key, as in SAGAN
        out = attend(query, key, value, self.impl).view(b, -1, h, w)  # B x C/2 x H x W
        return self.gamma * self.out_conv(out) + x

    def extra_repr(self) -> str:
        return f"pool={self.pool}, impl={self.impl!r}"
