"""Disentangled non-local block (DNL), Yin et al., Disentangled Non-Local Neural Networks,
ECCV 2020. Paper: https://arxiv.org/abs/2006.06668.

The non-local attention logit q_i . k_j splits into a pairwise term and a unary term (the key's
own saliency). DNL computes them apart:
- whitened pairwise: query and key (1x1 convs C -> C/2) each minus its mean over positions,
  softmax_j((q_i - mean q) . (k_j - mean k) / sqrt(C/2) / temperature), temperature 0.05;
- unary: softmax_j(m_j) with m a 1x1 conv C -> 1, the same for every query;
out = x + gamma * sum_j pairwise_ij v_j + sum_j unary_j v_j, with v a 1x1 conv C -> C (no bias)
and gamma a scalar initialised to 0 that scales the pairwise term only.

Matches the authors' yinmh17/DNL-Semantic-Segmentation `model/seg/ops/nonlocal_block.py`
(NonLocal2d_bn) with their DNL configuration `configs/seg/cityscapes/NLin_fcn_cityscapes_seg.conf`
(whiten_type ['channel'], temp 0.05, with_gc True, use_out False, out_bn False, downsample
False); tests/fixtures/known_answers/dnl.pt holds their output and input gradient. Weights start
as theirs: every conv N(0, 0.01), biases 0. Caveats:
- Not the identity at initialisation: gamma starts at 0 but the unary term does not.
- The whitening removes any constant from query and key, so their conv biases never change the
  output (zero gradient); the mask conv's bias likewise (a softmax over positions). They are
  kept so the parameters match the authors'.
- mmseg's `dnl_head.py` differs: it projects both terms with a shared conv + norm (mmcv
  NonLocal2d's conv_out, zero-initialised) and has no gamma.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DisentangledNonLocal(nn.Module):
    def __init__(self, channels: int, reduction: int = 2, temperature: float = 0.05) -> None:
        super().__init__()
        inter = max(channels // reduction, 1)
        self.temperature = temperature
        self.scale = math.sqrt(inter)
        self.conv_query = nn.Conv2d(channels, inter, 1)
        self.conv_key = nn.Conv2d(channels, inter, 1)
        self.conv_value = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        for conv in (self.conv_query, self.conv_key, self.conv_value, self.conv_mask):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.conv_query(x).flatten(2)  # B x C' x N
        k = self.conv_key(x).flatten(2)
        q = q - q.mean(2, keepdim=True)  # whitening: each channel minus its mean over positions
        k = k - k.mean(2, keepdim=True)
        v = self.conv_value(x).flatten(2)  # B x C x N
        pairwise = torch.bmm(q.transpose(1, 2), k) / self.scale / self.temperature
        pairwise = torch.softmax(pairwise, dim=2)  # B x N x N, over keys
        out = torch.bmm(v, pairwise.transpose(1, 2)).view_as(x)
        unary = torch.softmax(self.conv_mask(x).flatten(2), dim=2)  # B x 1 x N, over positions
        out_unary = torch.bmm(v, unary.transpose(1, 2)).unsqueeze(-1)  # B x C x 1 x 1
        return self.gamma * out + out_unary + x

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
