"""Criss-cross attention, Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation,
ICCV 2019. Paper: https://arxiv.org/abs/1811.11721.

Each position attends over the H + W - 1 positions of its own row and column (itself once):
query/key 1x1 convs C -> C/8, value 1x1 conv C -> C, one softmax over the whole criss-cross,
out = gamma * aggregated + x with gamma initialised to 0 (the identity at start). The
recurrent form (RCCA) applies the SAME module `recurrence` times, so after two steps every
position has (indirectly) seen every other one.

Written with einsum over rows and columns: memory O(N (H + W)), never an N x N map. The
official code first used a custom CUDA op for this; the einsum form is the same function in
plain PyTorch (tests check it against a dense masked N x N reference in float64).

Caveats:
- In the official network the recurrence runs inside a head with a 3x3 conv before and after
  it; like PAM here, this is only the attention module for the shared slot.
- The key conv's bias cannot change the output: it adds q_i . b to every energy of row i,
  which the softmax removes. It is kept so the parameters match the official module.
"""

from __future__ import annotations

import torch
from torch import nn

from danet.errors import DanetError


class CrissCross(nn.Module):
    """Position attention over each position's row and column, applied `recurrence` times with
    shared weights; each step is x <- gamma * aggregated + x."""

    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        if recurrence < 1:
            raise DanetError(f"criss-cross recurrence must be >= 1, got {recurrence}")
        qk = max(channels // reduction, 1)
        self.recurrence = recurrence
        self.query_conv = nn.Conv2d(channels, qk, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, qk, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """One criss-cross step (CCNet's CCA)."""
        h, w = x.shape[-2:]
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        # energy against the column (same w, every row g) and against the row (same h, every v)
        e_col = torch.einsum("bchw,bcgw->bhwg", q, k)  # B x H x W x H
        e_row = torch.einsum("bchw,bchv->bhwv", q, k)  # B x H x W x W
        # the position itself is in both; keep it once, in the row part
        self_in_col = torch.eye(h, dtype=torch.bool, device=x.device).unsqueeze(1)  # H x 1 x H
        e_col = e_col.masked_fill(self_in_col, float("-inf"))
        attn = torch.softmax(torch.cat((e_col, e_row), dim=-1), dim=-1)  # over H + W keys
        a_col, a_row = attn.split((h, w), dim=-1)
        out = torch.einsum("bhwg,bcgw->bchw", a_col, v) + torch.einsum("bhwv,bchv->bchw", a_row, v)
        return self.gamma * out + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.attend(x)
        return x

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}"
