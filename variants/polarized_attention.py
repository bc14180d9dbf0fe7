"""Polarized self-attention (PSA), parallel and sequential, Liu et al., Polarized
Self-Attention: Towards High-quality Pixel-wise Regression, arXiv 2107.00782.

Paper: https://arxiv.org/abs/2107.00782. Authors' code: github.com/DeLightCMU/PSA,
`semantic-segmentation/network/PSA.py` (`PSA_p`, `PSA_s`, commit 20e307a). Two gates, each
keeping full resolution along the axis it gates:
- channel-only: a 1x1 conv C -> 1 gives a softmax over positions that pools a C/2-wide 1x1
  conv of x into one C/2 vector; `conv_up` lifts it to C and a sigmoid gates the channels;
- spatial-only: a C/2-wide 1x1 conv of x, averaged over positions, is dotted with another
  C/2-wide 1x1 conv at every position; a sigmoid gates the positions.
psa_p returns x * channel gate + x * spatial gate; psa_s applies the channel gate, then the
spatial gate computed from its output. Parameter names are the authors' (conv_q_right,
conv_v_right, conv_up, conv_q_left, conv_v_left), so their checkpoints load;
tests/fixtures/known_answers/psa_p.pt and psa_s.pt hold their modules' outputs.

Caveats: the authors' code, which is followed here, differs from the paper's equations (their
issue #5): the paper's channel branch ends in LayerNorm, psa_p's `conv_up` is one bias-free
conv and psa_s's a bottleneck C/2 -> C/8 -> LayerNorm -> ReLU -> C (with biases; so psa_s
needs C >= 8, and below C = 16 its LayerNorm sees one value and passes only its bias); the
paper's spatial branch takes a softmax over the C/2 channels of the pooled query, psa_p a
softmax over positions of the product (so its gate is the sigmoid of a softmax, in
(0.5, 0.73)) and psa_s a softmax over positions of each value channel before the product. The
function names `spatial_pool` and `channel_pool` there are swapped with respect to the paper.
Gates, not residual blocks (psa_p is about x at init, psa_s about x / 4).
"""

from __future__ import annotations

import torch
from torch import nn

from danet.errors import DanetError


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A bias-free 1x1 conv with the authors' Kaiming-normal (fan-in) initialisation."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    return conv


class PolarizedAttention(nn.Module):
    """The two polarized gates; subclasses set `conv_up` and how the gates combine."""

    softmax_before_product = False  # the spatial branch's softmax over positions (see above)

    def __init__(self, channels: int, conv_up: nn.Module) -> None:
        super().__init__()
        inter = channels // 2
        self.conv_q_right = _conv(channels, 1)
        self.conv_v_right = _conv(channels, inter)
        self.conv_up = conv_up
        self.conv_q_left = _conv(channels, inter)
        self.conv_v_left = _conv(channels, inter)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x 1 x 1 (the authors' `spatial_pool`)."""
        values = self.conv_v_right(x).flatten(2)  # B x C/2 x N
        weights = self.conv_q_right(x).flatten(2).softmax(dim=-1)  # B x 1 x N
        pooled = torch.bmm(values, weights.transpose(1, 2)).unsqueeze(-1)  # B x C/2 x 1 x 1
        return torch.sigmoid(self.conv_up(pooled))

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """B x 1 x H x W (the authors' `channel_pool`)."""
        b, _, h, w = x.shape
        query = self.conv_q_left(x).mean(dim=(2, 3)).unsqueeze(1)  # B x 1 x C/2
        values = self.conv_v_left(x).flatten(2)  # B x C/2 x N
        if self.softmax_before_product:
            return torch.sigmoid(torch.bmm(query, values.softmax(dim=-1))).view(b, 1, h, w)
        return torch.sigmoid(torch.bmm(query, values).softmax(dim=-1)).view(b, 1, h, w)


class PolarizedParallel(PolarizedAttention):
    """PSA, parallel layout (attends over both): x * spatial gate + x * channel gate."""

    def __init__(self, channels: int) -> None:
        if channels < 2:
            raise DanetError(f"psa_p needs at least 2 channels (C/2 wide convs), got {channels}")
        super().__init__(channels, nn.Conv2d(channels // 2, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.spatial_gate(x) + x * self.channel_gate(x)


class PolarizedSequential(PolarizedAttention):
    """PSA, sequential layout (attends over both): the spatial gate of the channel-gated x."""

    softmax_before_product = True

    def __init__(self, channels: int) -> None:
        if channels < 8:
            raise DanetError(f"psa_s needs at least 8 channels (a C/8 bottleneck), got {channels}")
        inter = channels // 2
        narrow = inter // 4  # the authors' ratio 4
        conv_up = nn.Sequential(
            nn.Conv2d(inter, narrow, 1),
            nn.LayerNorm([narrow, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(narrow, channels, 1),
        )
        super().__init__(channels, conv_up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel_gate(x)
        return y * self.spatial_gate(y)
