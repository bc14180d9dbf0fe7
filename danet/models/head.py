"""The DANet head skeleton with its attention slot from the registry. DANetHead of the
official code at tag v0.5.0 (github.com/junfu1115/DANet, encoding/models/danet.py; restated
in docs/reference.md, section 1).

Official layout for the dual module: conv5a -> sa -> conv51 -> conv6 and conv5c -> sc ->
conv52 -> conv7 in parallel, conv8 on the sum. The single head keeps the first branch only:
conv5a -> sa -> conv51 -> conv8. So the reduce and fuse convolutions are the same whatever
the module, and `none` is the dilated-FCN baseline.

`head="dual"` with a single module puts it in the first branch and the identity in the
second, so it differs from DANet's dual head by one module, and `none` with the dual head is
that skeleton's baseline. `auto` is dual for a two-branch variant (danet), single otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

import variants
from danet.errors import DanetError, unknown_choice

HEADS = ("auto", "single", "dual")
ATTENTION_SLOTS = ("sa", "sc")  # the attention module of each branch (official names)
OUTPUTS = ("fused", "branch_a", "branch_b")  # the logits forward returns, in order


def head_branches(variant: str, head: str = "auto") -> tuple[str, ...]:
    """The registry name of the module in each branch of the head."""
    if head not in HEADS:
        raise unknown_choice("model.head", head, HEADS)
    branches = variants.info(variant).branches
    if head == "dual" and len(branches) == 1:
        return (branches[0], "none")
    if head == "single" and len(branches) == 2:
        raise DanetError(
            f"variant '{variant}' has two branches ({', '.join(branches)}); "
            "it needs model.head=dual or auto"
        )
    return branches


def num_outputs(branches: tuple[str, ...]) -> int:
    """Logit maps the head returns: the fused one, and one per branch of a dual head."""
    return len(OUTPUTS) if len(branches) == 2 else 1


def kind(branches: tuple[str, ...]) -> str:
    """"dual" (two branches, three outputs) or "single", as result.json records it."""
    return "dual" if len(branches) == 2 else "single"


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def classifier(cin: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(cin, num_classes, 1))


class DANetHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        variant: str = "danet",
        variant_opts: dict | None = None,
        inter_channels: int = 0,
        head: str = "auto",
    ) -> None:
        super().__init__()
        inter = inter_channels or in_channels // 4
        branches = head_branches(variant, head)
        opts = variants.branch_options(variant, variant_opts or {}) + [{}]  # identity: no options
        self.conv5a = conv_bn_relu(in_channels, inter)
        self.sa = variants.create(branches[0], inter, **opts[0])
        self.conv51 = conv_bn_relu(inter, inter)
        if len(branches) == 2:
            self.conv5c = conv_bn_relu(in_channels, inter)
            self.sc = variants.create(branches[1], inter, **opts[1])
            self.conv52 = conv_bn_relu(inter, inter)
            self.conv6 = classifier(inter, num_classes)
            self.conv7 = classifier(inter, num_classes)
        self.conv8 = classifier(inter, num_classes)
        self.num_outputs = num_outputs(branches)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits at feature resolution: [fused] or [fused, sa branch, sc branch]."""
        sa_conv = self.conv51(self.sa(self.conv5a(x)))
        if self.num_outputs == 1:
            return [self.conv8(sa_conv)]
        sc_conv = self.conv52(self.sc(self.conv5c(x)))
        return [self.conv8(sa_conv + sc_conv), self.conv6(sa_conv), self.conv7(sc_conv)]
