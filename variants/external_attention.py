"""External attention, Guo et al., Beyond Self-attention: External Attention using Two Linear
Layers for Visual Tasks, arXiv 2105.02358 (TPAMI 2022).

Paper: https://arxiv.org/abs/2105.02358. Authors' code: github.com/MenghaoGuo/EANet,
`model_torch.py` (`External_attention`, the segmentation head's module, commit 59c03cb). The
positions attend to S = 64 learned "external memory" units instead of to each other, so the
cost is linear in N:
    x' = conv1x1(x),  A = M_k x' (S x N),  A = softmax over positions, then A / (1e-9 + sum
    over the S units) (the paper's double normalisation),  y = M_v A (C x N),
    out = ReLU(BN(conv1x1(y)) + x).
M_k and M_v are 1x1 Conv1d layers (`linear_0`, `linear_1`, no bias); the parameter names are
the authors', so their checkpoints load. tests/fixtures/known_answers/external.pt holds their
module's output.

Caveats:
- Initialisation follows the authors' code: conv and memory weights N(0, 2 / fan-out), BN
  weight 1, so the module is not the identity at initialisation; M_v starts as M_k's transpose.
  (In their file M_v's weight is made a transposed view of M_k's, which ties the two only
  until the module is moved to a device, as their training does with `.cuda()`: here they are
  two independent parameters from the start, as in the paper.)
- Their BN is a synchronized BN; this is a plain BatchNorm2d, which training on several
  processes converts like every other BN (config `train.sync_bn`, danet/engine/distributed.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ExternalAttention(nn.Module):
    """External attention with double normalisation (attends over positions via S memory
    units). Option: memory (S, the number of memory units; 64 in the paper and code)."""

    def __init__(self, channels: int, memory: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.linear_0 = nn.Conv1d(channels, memory, 1, bias=False)  # M_k
        self.linear_1 = nn.Conv1d(memory, channels, 1, bias=False)  # M_v
        self.conv2 = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation (model_torch.py, External_attention.__init__)."""
        std = math.sqrt(2.0 / self.conv1.out_channels)  # N(0, 2 / fan-out), fan-out = C
        for conv in (self.conv1, self.conv2[0], self.linear_1):
            nn.init.normal_(conv.weight, 0.0, std)
        with torch.no_grad():
            self.linear_0.weight.copy_(self.linear_1.weight.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.linear_0(self.conv1(x).flatten(2))  # B x S x N
        attn = attn.softmax(dim=-1)  # over positions
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))  # over the memory units
        y = self.linear_1(attn).view(b, c, h, w)
        return torch.relu(self.conv2(y) + x)
