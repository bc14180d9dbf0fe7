"""Expectation-Maximization Attention (EMANet), Li et al., ICCV 2019.

Paper: https://arxiv.org/abs/1907.13426. The features are reconstructed from K bases found by
a few EM steps over the image's positions: E-step responsibilities z = softmax over bases of
x_n . mu_k, M-step mu_k = sum_n z_nk x_n / sum_n z_nk, L2-normalised. The output is
ReLU(BN(conv1x1(ReLU(mu z^T))) + x). Cost is linear in N: O(N C K) per step.

Caveats: the bases are a buffer initialised from N(0, 2/K) and, in training, updated by a
moving average of the batch's final bases (momentum 0.9), as in the paper; so, like BN
statistics, they depend on the training data seen. The last BN's weight starts at zero so
the module is the identity at initialisation on non-negative input (the head's conv5a ends in
ReLU); the paper initialises it as any BN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EMAttention(nn.Module):
    def __init__(self, channels: int, bases: int = 64, stages: int = 3, momentum: float = 0.9):
        super().__init__()
        self.stages, self.momentum = stages, momentum
        mu = torch.randn(1, channels, bases) * math.sqrt(2.0 / bases)
        self.register_buffer("mu", F.normalize(mu, dim=1))
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        nn.init.zeros_(self.conv_out[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        feats = self.conv_in(x).flatten(2)  # B x C x N
        mu = self.mu.expand(b, -1, -1)  # B x C x K
        with torch.no_grad():  # the EM iterations are not back-propagated through (paper)
            for _ in range(self.stages):
                z = torch.softmax(torch.bmm(feats.transpose(1, 2), mu), dim=2)  # B x N x K
                z = z / (1e-6 + z.sum(dim=1, keepdim=True))  # normalise over positions
                mu = F.normalize(torch.bmm(feats, z), dim=1)
        z = torch.softmax(torch.bmm(feats.transpose(1, 2), mu), dim=2)  # with gradients
        out = F.relu(torch.bmm(mu, z.transpose(1, 2))).view(b, c, h, w)
        if self.training:
            with torch.no_grad():
                mean_mu = F.normalize(mu.mean(dim=0, keepdim=True), dim=1)
                self.mu.mul_(self.momentum).add_(mean_mu, alpha=1 - self.momentum)
        return F.relu(self.conv_out(out) + x)
