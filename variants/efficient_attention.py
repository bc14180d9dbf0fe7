"""Efficient attention (linear complexity), Shen et al., WACV 2021.

Paper: https://arxiv.org/abs/1812.01243. Softmax is applied to the keys over positions and to
the queries over channels, so (Q K^T) V can be computed as Q (K^T V): the d_k x d_v global
context costs O(N d_k d_v) instead of O(N^2 d). Heads split the channels; a 1x1
reprojection and a residual connection follow, as in the paper.

Caveat: it approximates dot-product attention rather than reproducing it; the paper's
module has no gamma, so it is not the identity at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class EfficientAttention(nn.Module):
    def __init__(
        self, channels: int, key_channels: int = 0, value_channels: int = 0, heads: int = 1
    ) -> None:
        super().__init__()
        self.key_channels = key_channels or max(channels // 2, heads)
        self.value_channels = value_channels or max(channels // 2, heads)
        self.heads = heads
        self.keys = nn.Conv2d(channels, self.key_channels, 1)
        self.queries = nn.Conv2d(channels, self.key_channels, 1)
        self.values = nn.Conv2d(channels, self.value_channels, 1)
        self.reprojection = nn.Conv2d(self.value_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n, heads = h * w, self.heads
        keys = self.keys(x).reshape(b, heads, -1, n).softmax(dim=3)  # over positions
        queries = self.queries(x).reshape(b, heads, -1, n).softmax(dim=2)  # over channels
        values = self.values(x).reshape(b, heads, -1, n)
        context = torch.einsum("bhkn,bhvn->bhkv", keys, values)  # per head d_k x d_v
        out = torch.einsum("bhkv,bhkn->bhvn", context, queries).reshape(b, -1, h, w)
        return self.reprojection(out) + x
