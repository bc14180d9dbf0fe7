"""SimAM, Yang et al., SimAM: A Simple, Parameter-Free Attention Module for Convolutional
Neural Networks, ICML 2021.

Paper: http://proceedings.mlr.press/v139/yang21o.html. Authors' code: github.com/ZjjConan/SimAM,
`networks/attentions/simam_module.py` (`simam_module`, commit ae98f43). Each neuron's weight is
the inverse of its minimal energy (paper, eq. 5-6): with d = (x - mu)^2 over the H x W positions
of its channel and sigma^2 = sum(d) / (H W - 1),
    out = x * sigmoid(d / (4 (sigma^2 + lambda)) + 1/2),    lambda = 1e-4,
so neurons that stand out from their channel's mean are kept, the others damped. No
parameters, no products: its cost is a few element-wise passes over x (about 10 N C ops).
tests/fixtures/known_answers/simam.pt holds the authors' module's output.

Caveats: a gate, not a residual block (at least x * sigmoid(1/2) ~ 0.62 x, never the identity).
At H = W = 1 the authors' code divides 0 by 0 (H W - 1 = 0) and returns NaN; here the variance
of a single value is 0 (the divisor is max(H W - 1, 1)), so out = x * sigmoid(1/2). Every other
size gives their numbers.
"""

from __future__ import annotations

import torch
from torch import nn


class SimAM(nn.Module):
    """Parameter-free energy-based attention over each position of each channel (attends over
    positions within a channel). Option: e_lambda (the energy's regulariser lambda, > 0)."""

    def __init__(self, channels: int, e_lambda: float = 1e-4) -> None:
        super().__init__()
        self.channels, self.e_lambda = channels, e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out: no library has SimAM (timm 1.0.31 does not)
        n = max(x.shape[2] * x.shape[3] - 1, 1)  # the authors' H W - 1, kept finite at 1x1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        energy_inv = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(energy_inv)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"
