"""A²-Net double attention block, Chen et al., A²-Nets: Double Attention Networks, NeurIPS 2018.

Paper: https://arxiv.org/abs/1810.11579. Two attention steps through n global descriptors
(paper, section 3, eq. 1-6), with A = phi(X) (m x N), B = theta(X) and V = rho(X) (n x N), all
1x1 convs of the input:
    gather:      G = A softmax(B)^T            (m x n; each of the n maps softmaxed over the
                                                positions: second-order attention pooling)
    distribute:  Z = G softmax(V)              (m x N; at each position, a softmax over the n
                                                descriptors selects what it receives)
    out = X + conv1x1(Z)                       (back to C channels, added to the input).
Computed in this order (G first) it costs O(N m n), linear in N; the other association,
A (softmax(B)^T softmax(V)), would build an N x N map like a non-local block.

There is no official code: tests/test_light_attention.py checks this module against the
equations above, written out separately, rather than against the authors' numbers.

Caveats: the widths m = n = C/4, the convs' biases and their default PyTorch initialisation
are this implementation's choices, where the paper's text as restated here does not fix them;
`m_channels` and `n_channels` set the widths. The output conv is not zero-initialised, so the
block is not the identity at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleAttention(nn.Module):
    """A² double attention (attends over positions via n global descriptors): gather n
    descriptors by attention pooling, distribute them to each position by a second softmax.
    Options: m_channels (descriptor width m), n_channels (number of descriptors n); None
    gives C // 4 (at least 1)."""

    def __init__(
        self, channels: int, m_channels: int | None = None, n_channels: int | None = None
    ) -> None:
        super().__init__()
        m = m_channels or max(channels // 4, 1)
        n = n_channels or max(channels // 4, 1)
        self.conv_a = nn.Conv2d(channels, m, 1)  # phi: the features gathered
        self.conv_b = nn.Conv2d(channels, n, 1)  # theta: the n attention maps
        self.conv_v = nn.Conv2d(channels, n, 1)  # rho: the attention vectors
        self.conv_out = nn.Conv2d(m, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out: neither timm nor torchvision has the A² block
        b, _, h, w = x.shape
        features = self.conv_a(x).flatten(2)  # B x m x N
        maps = self.conv_b(x).flatten(2).softmax(dim=-1)  # B x n x N, over positions
        vectors = self.conv_v(x).flatten(2).softmax(dim=1)  # B x n x N, over descriptors
        descriptors = torch.bmm(features, maps.transpose(1, 2))  # B x m x n
        z = torch.bmm(descriptors, vectors).view(b, -1, h, w)  # B x m x H x W
        return x + self.conv_out(z)
