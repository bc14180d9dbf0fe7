"""Global reasoning unit (GloRe), Chen et al., Graph-Based Global Reasoning Networks, CVPR 2019.
Paper: https://arxiv.org/abs/1811.12814.

Features are projected from coordinate space onto a small graph and reasoned over there:
states S = conv1x1(x) (C -> 2M) and projection B = conv1x1(x) (C -> M nodes), node features
V = S B^T (2M x M, a weighted sum over all positions); one graph convolution,
Z = conv_state(ReLU(V + conv_node(V))) (a 1x1 conv across nodes with bias, then across states
without); back-projection Y = Z B (2M x N); out = x + BN(conv1x1(Y)) (2M -> C). M = C / 4 as
in the authors' networks (num_mid = C / 4 at every unit).

Matches facebookresearch/GloRe `network/global_reasoning_unit.py` (GloRe_Unit_2D);
tests/fixtures/known_answers/glore.pt holds their output and input gradient. Initialised as
the authors' networks do: convs Xavier-uniform with zero biases, and the last BN's weight (their
`blocker`) zero, so the unit starts as the identity. Caveats:
- `normalize` (default off, as theirs) divides V by N; the authors advise it when input sizes
  vary, which they do between this harness's training crops and whole-image evaluation.
- The BN uses eps 1e-4, as theirs.
"""

from __future__ import annotations

import torch
from torch import nn


class GraphConv(nn.Module):
    """The authors' GCN: node-wise 1x1 conv (with bias) plus identity, ReLU, state-wise conv."""

    def __init__(self, states: int, nodes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(nodes, nodes, kernel_size=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(states, states, kernel_size=1, bias=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # B x states x nodes
        h = self.conv1(v.transpose(1, 2)).transpose(1, 2) + v
        return self.conv2(self.relu(h))


class GloRe(nn.Module):
    def __init__(self, channels: int, reduction: int = 4, normalize: bool = False) -> None:
        super().__init__()
        mid = max(channels // reduction, 1)
        self.states, self.nodes, self.normalize = 2 * mid, mid, normalize
        self.conv_state = nn.Conv2d(channels, self.states, 1)
        self.conv_proj = nn.Conv2d(channels, self.nodes, 1)
        self.gcn = GraphConv(self.states, self.nodes)
        self.conv_extend = nn.Conv2d(self.states, channels, 1, bias=False)
        self.blocker = nn.BatchNorm2d(channels, eps=1e-4)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.blocker.weight)  # the authors zero it after building the network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        state = self.conv_state(x).flatten(2)  # B x 2M x N
        proj = self.conv_proj(x).flatten(2)  # B x M x N
        nodes = torch.bmm(state, proj.transpose(1, 2))  # B x 2M x M
        if self.normalize:
            nodes = nodes * (1.0 / state.shape[2])
        y = torch.bmm(self.gcn(nodes), proj).view(b, self.states, h, w)
        return x + self.blocker(self.conv_extend(y))

    def extra_repr(self) -> str:
        return f"states={self.states}, nodes={self.nodes}, normalize={self.normalize}"
