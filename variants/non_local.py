"""Non-local block, Wang et al., Non-local Neural Networks, CVPR 2018.
Paper: https://arxiv.org/abs/1711.07971.

y_i = sum_j f(x_i, x_j) g(x_j) / C(x), z = BN(W y) + x, with theta, phi, g 1x1 convs C -> C/2
and W a 1x1 conv C/2 -> C. Two of the paper's pairwise functions are offered:
`embedded_gaussian` (softmax over keys of theta_i . phi_j, no scaling: the paper's default) and
`dot_product` (theta_i . phi_j / N with N the number of key positions). The BN after W has its
weight and bias initialised to zero, as the paper does, so the block starts as the identity.

Caveats:
- The paper's optional sub-sampling (max-pooling phi and g) is not offered; SAGAN
  (variants.sagan) is that form. The `gaussian` and `concatenation` pairwise functions are
  left out (the paper reports all four within a few tenths of a point).
- Unlike timm's NonLocalAttn (timm 1.0.31: 1/sqrt(C) scaling, an extra conv and BN) this
  applies no 1/sqrt(d) scaling (docs/reference.md, section 4).
- In training mode BatchNorm needs more than one value per channel, so B * H * W >= 2; the
  segmentation head's own BN layers around this slot have the same limit. Eval mode has none.
- `dot_product` with impl='naive' is computed through the N x N map like
  `embedded_gaussian`, so the two modes cost the same; with 'auto' or 'efficient' it is
  re-associated to (g phi^T) theta^T / N, O(N C^2) and without the map: the same sum,
  rounded differently.
"""

from __future__ import annotations

import torch
from torch import nn

from danet.errors import unknown_choice
from variants.attention_ops import IMPLS, attend

MODES = ("embedded_gaussian", "dot_product")


class NonLocal(nn.Module):
    """Position attention over all N positions; z = BN(W y) + x with BN zero-initialised."""

    def __init__(
        self,
        channels: int,
        reduction: int = 2,
        mode: str = "embedded_gaussian",
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise unknown_choice("nonlocal mode", mode, MODES)
        if impl not in IMPLS:
            raise unknown_choice("nonlocal impl", impl, IMPLS)
        inter = max(channels // reduction, 1)
        self.mode, self.impl = mode, impl
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1)
        self.g = nn.Conv2d(channels, inter, kernel_size=1)
        self.W = nn.Conv2d(inter, channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(channels)
        # zero scale and shift: BN(W y) = 0 at start, so the block is the identity
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # B x N x C/2
        phi = self.phi(x).flatten(2)  # B x C/2 x N
        g = self.g(x).flatten(2)  # B x C/2 x N
        if self.mode == "embedded_gaussian":  # softmax over keys of theta_i . phi_j
            y = attend(theta, phi, g, self.impl)
        elif self.impl == "naive":  # dot product, normalised by C(x) = N keys
            y = torch.bmm(g, torch.bmm(theta, phi).transpose(1, 2)) / phi.shape[-1]
        else:  # the same sum, associated the other way: no N x N map
            y = torch.bmm(torch.bmm(g, phi.transpose(1, 2)), theta.transpose(1, 2)) / phi.shape[-1]
        y = y.reshape(b, -1, h, w)  # B x C/2 x H x W
        return self.bn(self.W(y)) + x

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, impl={self.impl!r}"
