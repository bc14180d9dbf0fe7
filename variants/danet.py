"""DANet's position (PAM) and channel (CAM) attention, Fu et al., CVPR 2019.

Paper: https://arxiv.org/abs/1809.02983. Semantics follow the official code at tag v0.5.0
(github.com/junfu1115/DANet, encoding/nn/attention.py: PAM_Module, CAM_Module; restated in
docs/reference.md, section 1), with its parameter names so released checkpoints load:
PAM has `query_conv`, `key_conv`, `value_conv` and `gamma`; CAM has only `gamma`.

Caveat: the official CAM applies softmax to rowmax(energy) - energy, i.e. softmax(-energy),
which weights *dissimilar* channels most; the paper's text says softmax(energy), and the
maintainers keep the released form (DANet issues #9 and #48). Both are offered
(`form="official"` is the default, as it produced the published numbers).
"""

from __future__ import annotations

import torch
from torch import nn

from danet.errors import unknown_choice
from variants.attention_ops import IMPLS, attend

CAM_FORMS = ("official", "paper")


class PAM(nn.Module):
    """Position attention: every position aggregates the values of all positions, weighted by
    softmax over keys of the (unscaled) query-key dot product; E = gamma * out + x."""

    def __init__(self, channels: int, reduction: int = 8, impl: str = "auto") -> None:
        super().__init__()
        if impl not in IMPLS:
            raise unknown_choice("pam impl", impl, IMPLS)
        self.impl = impl
        qk = max(channels // reduction, 1)
        self.query_conv = nn.Conv2d(channels, qk, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, qk, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.query_conv(x).flatten(2).transpose(1, 2)  # B x N x C'
        key = self.key_conv(x).flatten(2)  # B x C' x N
        value = self.value_conv(x).flatten(2)  # B x C x N
        out = attend(query, key, value, self.impl).view(b, c, h, w)
        return self.gamma * out + x

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"


class CAM(nn.Module):
    """Channel attention: no convolutions; channel affinity from X X^T over positions."""

    def __init__(self, channels: int, form: str = "official") -> None:
        super().__init__()
        if form not in CAM_FORMS:
            raise unknown_choice("cam form", form, CAM_FORMS)
        self.form = form
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.flatten(2)  # B x C x N
        energy = torch.bmm(flat, flat.transpose(1, 2))  # B x C x C
        if self.form == "official":
            energy = energy.amax(dim=-1, keepdim=True) - energy
        attention = torch.softmax(energy, dim=-1)
        out = torch.bmm(attention, flat).view(b, c, h, w)
        return self.gamma * out + x

    def extra_repr(self) -> str:
        return f"form={self.form!r}"


class DualAttention(nn.Module):
    """PAM and CAM in parallel, summed: the head-free form of DANet's dual module.

    Inside the DANet head each branch has its own convolutions before and after the
    attention (see danet.models.head), so the head places `sa` and `sc` itself; this
    module is the drop-in form for any other (B, C, H, W) slot.
    """

    def __init__(
        self, channels: int, reduction: int = 8, impl: str = "auto", form: str = "official"
    ) -> None:
        super().__init__()
        self.sa = PAM(channels, reduction=reduction, impl=impl)
        self.sc = CAM(channels, form=form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sa(x) + self.sc(x)
