"""Position-sensitive axial attention, Wang et al., Axial-DeepLab: Stand-Alone Axial-Attention
for Panoptic Segmentation, ECCV 2020. Paper: https://arxiv.org/abs/2003.07853.

2D self-attention factorised into a height pass then a width pass; each attends over its whole
column (row) with multi-head attention whose logits and values carry learned relative-position
embeddings r (per head width: query/key C_h / 2, value C_h):
y_i = sum_j softmax_j(q_i.k_j + q_i.r^q_{i-j} + k_j.r^k_{j-i}) (v_j + r^v_{i-j}), with BN on the
qkv projection, on each of the three logit terms and on both output terms (summed). The slot
holds the authors' AxialBlock: 1x1 conv + BN + ReLU to C/2, height pass, width pass, ReLU,
1x1 conv + BN back to C, out = ReLU(x + that); the last BN's weight starts at 0 (their
zero_init_residual), so the block is the identity at start on non-negative input.

Matches csrhddlam/axial-deeplab `lib/models/axialnet.py` (AxialBlock, AxialAttention, init of
AxialAttentionNet); tests/fixtures/known_answers/axial.pt holds their output and input
gradient. Caveats:
- Their module fixes the axis length (kernel_size = the feature size of the ImageNet stage it
  sits in) and stores 2K - 1 embeddings. Here the table holds 2 span - 1 embeddings (offsets
  -(span-1)..span-1) and each forward takes those of the offsets its own H and W need: for
  H, W <= span that is exactly their module built with kernel_size = H (W). Longer axes clip
  larger offsets to the last embedding (Shaw et al., 2018); the attention stays global along
  the axis (the paper's local span-m variant is not offered).
- Heads (`groups`, 8 as theirs) split C/2 channels evenly, with an even width per head; below
  16 channels per block (the 8-channel modules the config check builds) they shrink to C/4,
  and where C/2 does not split into `groups` heads of an even width (the 80-channel head of
  effnet-lite0: 40 = 8 x 5) to the largest count that does (5 heads of 8).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from danet.errors import DanetError


class AxialAttention(nn.Module):
    """Multi-head position-sensitive attention along the height (or the width) of B x C x H x W."""

    def __init__(self, planes: int, groups: int, span: int, width: bool) -> None:
        super().__init__()
        self.groups, self.group_planes = groups, planes // groups
        self.span, self.width = span, width
        self.qkv_transform = nn.Conv1d(planes, 2 * planes, 1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(2 * planes)
        self.bn_similarity = nn.BatchNorm2d(3 * groups)
        self.bn_output = nn.BatchNorm1d(2 * planes)
        self.relative = nn.Parameter(torch.empty(2 * self.group_planes, 2 * span - 1))
        nn.init.normal_(self.qkv_transform.weight, 0.0, math.sqrt(1.0 / planes))
        nn.init.normal_(self.relative, 0.0, math.sqrt(1.0 / self.group_planes))

    def embeddings(self, length: int) -> torch.Tensor:
        """E[c, i, j] = r[c, i - j] for i, j < length (offsets clipped to the table)."""
        pos = torch.arange(length, device=self.relative.device)
        offset = (pos[:, None] - pos[None, :]).clamp(1 - self.span, self.span - 1)
        table = self.relative[:, (offset + self.span - 1).flatten()]
        return table.view(-1, length, length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 1, 3) if self.width else x.permute(0, 3, 1, 2)  # lines, C, length
        n, lines, c, length = x.shape
        g, gp = self.groups, self.group_planes
        qkv = self.bn_qkv(self.qkv_transform(x.reshape(n * lines, c, length)))
        q, k, v = qkv.reshape(n * lines, g, 2 * gp, length).split([gp // 2, gp // 2, gp], dim=2)
        q_emb, k_emb, v_emb = self.embeddings(length).split([gp // 2, gp // 2, gp], dim=0)
        qr = torch.einsum("bgci,cij->bgij", q, q_emb)
        kr = torch.einsum("bgci,cij->bgij", k, k_emb).transpose(2, 3)
        qk = torch.einsum("bgci,bgcj->bgij", q, k)
        logits = self.bn_similarity(torch.cat([qk, qr, kr], dim=1))
        sim = torch.softmax(logits.view(n * lines, 3, g, length, length).sum(dim=1), dim=3)
        sv = torch.einsum("bgij,bgcj->bgci", sim, v)
        sve = torch.einsum("bgij,cij->bgci", sim, v_emb)
        # the authors' layout: [sv, sve] side by side per channel, normalised, then summed
        out = self.bn_output(torch.cat([sv, sve], dim=-1).view(n * lines, 2 * c, length))
        out = out.view(n, lines, c, 2, length).sum(dim=-2)
        return out.permute(0, 2, 1, 3) if self.width else out.permute(0, 2, 3, 1)


class AxialBlock(nn.Module):
    def __init__(self, channels: int, groups: int = 8, span: int = 128) -> None:
        super().__init__()
        width = channels // 2
        if width < 2:
            raise DanetError(f"variant 'axial' needs at least 4 channels, got {channels}")
        groups = min(groups, width // 2)  # each head keeps one query and one key channel
        # a head width must be even (half query/key, half value): where C/2 does not split
        # into `groups` such heads (80 channels: 40 = 8 x 5), the largest count below that does
        groups = next((g for g in range(groups, 0, -1) if width % (2 * g) == 0), groups)
        if width % (2 * groups):
            raise DanetError(
                f"variant 'axial': its {width} channels (half of {channels}) must split into "
                f"{groups} heads of an even width; set model.variant_opts.groups to a divisor "
                f"of {width // 2}"
            )
        self.conv_down = nn.Conv2d(channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.height_block = AxialAttention(width, groups, span, width=False)
        self.width_block = AxialAttention(width, groups, span, width=True)
        self.conv_up = nn.Conv2d(width, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        for conv in (self.conv_down, self.conv_up):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.bn2.weight)  # the authors' zero_init_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv_down(x)))
        out = self.relu(self.width_block(self.height_block(out)))
        return self.relu(self.bn2(self.conv_up(out)) + x)
