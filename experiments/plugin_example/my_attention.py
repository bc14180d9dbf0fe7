"""A gated global-context block, registered as variant 'gate' (config: plugins)."""

import torch
from torch import nn

import variants


class GlobalGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                                nn.Conv2d(hidden, channels, 1))
        self.gamma = nn.Parameter(torch.zeros(1))  # starts as the identity, as DANet's PAM

    def forward(self, x):
        return x + self.gamma * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True))) * x


variants.register("gate", GlobalGate, family="gating", attends="channels", cost="2 N C + C^2/2")
