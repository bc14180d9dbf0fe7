"""ANN's asymmetric pyramid non-local block (APNB), Zhu et al., Asymmetric Non-local Neural
Networks for Semantic Segmentation, ICCV 2019. Paper: https://arxiv.org/abs/1908.07678.

A non-local block whose keys and values are not the N positions but S = 110 pyramid-pooled
anchors (adaptive average pooling to 1x1, 3x3, 6x6, 8x8), so attention costs O(N S) instead of
O(N^2). Query and key share one 1x1 conv + BN + ReLU (C -> C/2); values are a 1x1 conv (C -> C/2);
softmax(q k^T / sqrt(C/2)) over the anchors; a 1x1 conv W (C/2 -> C, weight and bias zero at
start) projects the context; out = conv1x1 + BN + ReLU + Dropout2d of [context, x].

Matches MendelXu/ANN `models/seg/utils/apnb.py` (APNB with sizes [1], psp_size (1, 3, 6, 8),
key and value C/2, dropout 0.05, as in their `models/seg/nets/annn.py`);
tests/fixtures/known_answers/ann.pt holds their output and input gradient. Caveats:
- Only APNB fits this slot. ANN's other block, AFNB, fuses two backbone stages (stage-4 queries
  against pyramid-pooled stage-5 keys), so it needs a second input the slot does not have.
- Not residual: [context, x] goes through a conv + BN + ReLU, so it is not the identity at start.
- On maps smaller than 8 x 8 adaptive pooling repeats positions, as in the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PYRAMID = (1, 3, 6, 8)


def pyramid_pool(x: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> B x C x S: the anchors of every pyramid level, concatenated."""
    return torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in PYRAMID], dim=2)


class AsymmetricPyramidNonLocal(nn.Module):
    def __init__(
        self, channels: int, key_channels: int = 0, value_channels: int = 0, dropout: float = 0.05
    ) -> None:
        super().__init__()
        key = key_channels or max(channels // 2, 1)
        value = value_channels or max(channels // 2, 1)
        self.key_channels = key
        self.f_key = nn.Sequential(nn.Conv2d(channels, key, 1), nn.BatchNorm2d(key), nn.ReLU())
        self.f_value = nn.Conv2d(channels, value, 1)
        self.W = nn.Conv2d(value, channels, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        key_map = self.f_key(x)  # the query too (shared, as the authors')
        query = key_map.flatten(2).transpose(1, 2)  # B x N x Ck
        key = pyramid_pool(key_map)  # B x Ck x S
        value = pyramid_pool(self.f_value(x))  # B x Cv x S
        sim = torch.softmax(torch.bmm(query, key) * self.key_channels**-0.5, dim=-1)  # B x N x S
        context = torch.bmm(value, sim.transpose(1, 2)).view(b, -1, h, w)
        return self.fuse(torch.cat([self.W(context), x], dim=1))
