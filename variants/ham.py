"""Hamburger with non-negative matrix factorisation (NMF), Geng et al., Is Attention Better Than
Matrix Decomposition?, ICLR 2021. Paper: https://arxiv.org/abs/2109.04553.

Global context as a low-rank reconstruction: the C x N feature matrix X (after the lower bread,
a 1x1 conv + ReLU, so X >= 0) is factorised X ~ D Cᵀ with R = 64 non-negative bases D (C x R)
by multiplicative updates, and the reconstruction D Cᵀ replaces X. Upper bread: 1x1 conv (no
bias) + BN; out = ReLU(x + upper(D Cᵀ)).

Matches Gsunshine/Enjoy-Hamburger `seg/HamNet/hamburger/ham.py` (NMF2D) and `burger.py`
(HamburgerV1) with the defaults of their `_MatrixDecomposition2DBase` (S = 1, D = C, R = 64,
6 steps in training, 7 in evaluation, random initial bases); tests/fixtures/known_answers/
ham.pt holds their output and input gradient. As theirs:
- the bases start anew for every image, uniform random and L2-normalised, drawn from torch's
  global generator: the output is random unless the seed is fixed (equal under one seed);
- the coefficients start as softmax(Xᵀ D) over the R bases;
- the iterations run without gradient ("one-step gradient"): only the last coefficient
  update and the reconstruction are differentiated, with D and the previous C held constant;
- convs start N(0, 2 / out_channels), BN weight 1 (so it is not the identity at start).
Caveats: their HamNet settings evaluate with 6 steps, their module default (and mmseg's
ham_head.py) with 7; `eval_steps` sets it. mmseg's port also back-propagates through every
iteration (no torch.no_grad); this module keeps the authors' one-step gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6  # the authors' guard in the multiplicative updates


def update_coef(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """One multiplicative update of the coefficients (B x N x R) for x ~ bases coefᵀ."""
    numerator = torch.bmm(x.transpose(1, 2), bases)
    denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
    return coef * numerator / (denominator + EPS)


def update_bases(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    numerator = torch.bmm(x, coef)
    denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
    return bases * numerator / (denominator + EPS)


def nmf_reconstruct(x: torch.Tensor, rank: int, steps: int) -> torch.Tensor:
    """x: B x C x N, non-negative -> its rank-R NMF reconstruction (one-step gradient)."""
    bases = torch.rand(x.shape[0], x.shape[1], rank, dtype=x.dtype, device=x.device)
    bases = F.normalize(bases, dim=1)
    with torch.no_grad():
        coef = torch.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)
        for _ in range(steps):
            coef = update_coef(x, bases, coef)
            bases = update_bases(x, bases, coef)
    coef = update_coef(x, bases, coef)  # the one differentiated step
    return torch.bmm(bases, coef.transpose(1, 2))


class Hamburger(nn.Module):
    def __init__(
        self, channels: int, rank: int = 64, train_steps: int = 6, eval_steps: int = 7
    ) -> None:
        super().__init__()
        self.rank, self.train_steps, self.eval_steps = rank, train_steps, eval_steps
        self.lower_bread = nn.Conv2d(channels, channels, 1)
        self.upper_bread = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        for conv in (self.lower_bread, self.upper_bread[0]):
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.lower_bread(x))
        steps = self.train_steps if self.training else self.eval_steps
        z = nmf_reconstruct(z.flatten(2), self.rank, steps).view_as(x)
        return F.relu(self.upper_bread(z) + x)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, train_steps={self.train_steps}, eval_steps={self.eval_steps}"
