"""SE, CBAM, ECA and GC attention: thin wrappers over timm.layers (timm 1.0.31).

- SE: Hu et al., Squeeze-and-Excitation Networks, CVPR 2018, https://arxiv.org/abs/1709.01507
- CBAM: Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018,
  https://arxiv.org/abs/1807.06521
- ECA: Wang et al., ECA-Net: Efficient Channel Attention, CVPR 2020,
  https://arxiv.org/abs/1910.03151
- GC: Cao et al., GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
  ICCVW 2019, https://arxiv.org/abs/1904.11492

timm already implements these, so each class here only subclasses the timm module: parameter
names stay timm's (timm weights load), and the constructor takes `channels` first plus timm's
own knob names as keyword options with defaults, so `variants.create` can list them.
Activations are given by timm's names ("relu", "silu", "sigmoid", "hard_sigmoid", ...) so a
YAML config can set them.

They are gates, not residual blocks with a gamma: they rescale x (GC's default adds to it), so
apart from GC they are NOT the identity at initialisation; each docstring says what they are.

Caveats:
- Reduced widths follow timm's rounding, which is not always C * rd_ratio: SE rounds to a
  multiple of 8 with a floor of 8 (C=64 -> 8, not 4; C=512 -> 32); CBAM and GC use divisor 1
  (CBAM 64 -> 4, 512 -> 32; GC 64 -> 8, 512 -> 64). Pass `rd_channels` to fix a width.
- CBAM's spatial gate has a BatchNorm (as the paper's code), so in training mode it needs
  B * H * W >= 2, the same limit as the head's BN layers; eval mode has none.
- GC defaults to the paper's block (fusion by addition, `fuse_add=True, fuse_scale=False`);
  timm's defaults are the other way round. rd_ratio keeps timm's 1/8 (the paper's backbone
  blocks use 1/16, mmsegmentation's GCNet head 1/4).
"""

from __future__ import annotations

from timm.layers import EcaModule, GlobalContext, SEModule, create_act, get_act_layer
from timm.layers.cbam import CbamModule  # not re-exported by timm.layers in 1.0.31
from torch import nn

from danet.errors import DanetError, unknown_choice


def _layer(name: str, what: str) -> type[nn.Module]:
    """timm's activation class for `name`, or the project error listing timm's names."""
    try:
        return get_act_layer(name)
    except KeyError:
        # timm keeps its name table private; it is read here only to list the valid names
        names = getattr(create_act, "_ACT_LAYER_DEFAULT", {})
        raise unknown_choice(what, name, names) from None


def odd_kernel(value: int) -> bool:
    """Whether a kernel size keeps the input's size: timm pads a k-tap conv by k // 2 on both
    sides, so an even (or no) kernel would change it."""
    return value >= 1 and value % 2 == 1


def _odd(value: int, what: str) -> int:
    if not odd_kernel(value):
        raise DanetError(f"{what} must be a positive odd integer, got {value}")
    return value


class SE(SEModule):
    """Squeeze-and-excitation (attends over channels): x * gate(fc2(act(fc1(mean_hw x)))).

    Options: rd_ratio (hidden width C * rd_ratio, rounded to rd_divisor), rd_channels (exact
    hidden width, overrides rd_ratio), rd_divisor, add_maxpool (average mean and max pooling, a
    timm addition), bias (of both fc), act_layer, gate_layer. At init: a random per-channel
    gate near sigmoid(0) = 0.5, i.e. roughly x / 2, not the identity.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        add_maxpool: bool = False,
        bias: bool = True,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ) -> None:
        super().__init__(
            channels,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            add_maxpool=add_maxpool,
            bias=bias,
            act_layer=_layer(act_layer, "act_layer"),
            gate_layer=_layer(gate_layer, "gate_layer"),
        )


class CBAM(CbamModule):
    """CBAM (attends over both): a channel gate from mean- and max-pooled features through a
    shared MLP, then a spatial gate from a spatial_kernel_size conv (+ BN) over the channel
    mean and max maps.

    Options: rd_ratio, rd_channels, rd_divisor (of the channel MLP), spatial_kernel_size (odd),
    act_layer, gate_layer, mlp_bias. At init: two random gates near 0.5, roughly x / 4.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int = 7,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
        mlp_bias: bool = False,
    ) -> None:
        super().__init__(
            channels,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            spatial_kernel_size=_odd(spatial_kernel_size, "spatial_kernel_size"),
            act_layer=_layer(act_layer, "act_layer"),
            gate_layer=_layer(gate_layer, "gate_layer"),
            mlp_bias=mlp_bias,
        )


class ECA(EcaModule):
    """Efficient channel attention (attends over channels): x * gate(conv1d_k(mean_hw x)), a
    k-tap 1-D conv across the channel axis instead of SE's MLP.

    Options: kernel_size (None: the paper's adaptive k, timm's form int(|log2 C + beta| / gamma)
    bumped to odd, at least 3: C=64 -> 3, C=512 -> 5; an odd int fixes k), gamma,
    beta (of that formula; not a residual gamma), use_mlp (timm's experimental 1x1 -> k conv
    pair of width rd_channels, with act_layer between; needs the adaptive k), rd_ratio,
    rd_channels, rd_divisor, act_layer (only with use_mlp), gate_layer. At init: a random
    per-channel gate near 0.5, roughly x / 2.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
        use_mlp: bool = False,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ) -> None:
        if kernel_size is not None and use_mlp:
            # timm derives k from `channels` whenever it gets them, and use_mlp needs them
            raise DanetError("eca: use_mlp=True needs kernel_size=None (the adaptive size)")
        super().__init__(
            # timm ignores kernel_size when given channels; withhold them to honour a fixed k
            channels if kernel_size is None else None,
            kernel_size=3 if kernel_size is None else _odd(kernel_size, "kernel_size"),
            gamma=gamma,
            beta=beta,
            act_layer=_layer(act_layer, "act_layer"),
            gate_layer=_layer(gate_layer, "gate_layer"),
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            use_mlp=use_mlp,
        )


class GC(GlobalContext):
    """Global context block (attends over both): a softmax-weighted pooling over positions
    (one 1x1 conv C -> 1 gives the weights), then a bottleneck 1x1 conv -> LayerNorm -> act ->
    1x1 conv, added to every position (fuse_add) and/or used as a sigmoid channel gate
    (fuse_scale).

    Options: use_attn (False: plain mean pooling), fuse_add, fuse_scale, rd_ratio, rd_channels,
    rd_divisor, act_layer, gate_layer (of fuse_scale). At init with the default add fusion:
    exactly the identity (the last conv of the add branch is all zero, as in GCNet's code);
    with fuse_scale a random gate near 0.5 on top.
    """

    def __init__(
        self,
        channels: int,
        use_attn: bool = True,
        fuse_add: bool = True,
        fuse_scale: bool = False,
        rd_ratio: float = 1 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ) -> None:
        if not (fuse_add or fuse_scale):
            raise DanetError("gc: at least one of fuse_add, fuse_scale must be True")
        super().__init__(
            channels,
            use_attn=use_attn,
            fuse_add=fuse_add,
            fuse_scale=fuse_scale,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            act_layer=_layer(act_layer, "act_layer"),
            gate_layer=_layer(gate_layer, "gate_layer"),
        )

    def reset_parameters(self) -> None:  # timm's __init__ calls it
        super().reset_parameters()
        if self.mlp_add is not None:
            # timm zeroes only the weight; GCNet zeroes the bias too, so the block starts as x
            nn.init.zeros_(self.mlp_add.fc2.bias)
