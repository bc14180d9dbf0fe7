"""Attention registry: every variant drops into the same (B, C, H, W) -> (B, C, H, W) slot.

`available()` lists the names, `create(name, channels, **opts)` builds one (its options checked
by name, type and range in `check_options`), `info(name)` gives its metadata. A composite
variant (DANet's dual module) also names the single-module branches that the DANet head places
in parallel (`info(name).branches`).

`register(name, factory, ...)` adds one: the built-ins below and a user's own modules alike
(a plugin file named in the config key `plugins` calls it when imported, inside
`registering(plugin)`: danet/plugins.py). The registry is the ground floor: it imports nothing
of danet/ but its error helpers (danet.errors).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from danet.errors import DanetError, coerce, did_you_mean, one_line, type_name, unknown_choice
from variants.ann import AsymmetricPyramidNonLocal
from variants.axial import AxialBlock
from variants.ccnet import CrissCross
from variants.coord_attention import CoordAttention
from variants.danet import CAM, PAM, DualAttention
from variants.dnl import DisentangledNonLocal
from variants.double_attention import DoubleAttention
from variants.efficient_attention import EfficientAttention
from variants.emanet import EMAttention
from variants.external_attention import ExternalAttention
from variants.glore import GloRe
from variants.ham import Hamburger
from variants.isa import InterlacedSparseAttention
from variants.non_local import NonLocal
from variants.polarized_attention import PolarizedParallel, PolarizedSequential
from variants.sagan import SelfAttention
from variants.simam import SimAM
from variants.timm_attention import CBAM, ECA, GC, SE, odd_kernel
from variants.triplet_attention import TripletAttention


@dataclass(frozen=True)
class VariantInfo:
    name: str
    factory: Callable[..., nn.Module]
    family: str
    attends: str  # what it mixes information over: "nothing", "positions", "channels", "both"
    cost: str  # multiply-adds of the attention itself, in N = H*W and C
    paper: str
    branches: tuple[str, ...]  # the head's parallel branches; a single module is its own branch
    source: str = ""  # a plugin's file or module (config key `plugins`); "" for a built-in


class Identity(nn.Module):
    """No attention: the head reduces to the dilated-FCN baseline."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x


_REGISTRY: dict[str, VariantInfo] = {}
_BUILTIN: set[str] = set()  # filled by the register calls below, before any plugin's
_SOURCE = ""  # the plugin being imported (registering): the variants it registers name it


@contextlib.contextmanager
def registering(source: str) -> Iterator[None]:
    """Variants registered inside the block come from `source` (a plugin's file or module); if
    the block fails, they are removed again, so that a later import starts clean."""
    global _SOURCE
    before, _SOURCE = set(_REGISTRY), source
    try:
        yield
    except BaseException:
        for name in set(_REGISTRY) - before:
            unregister(name)
        raise
    finally:
        _SOURCE = ""


def unregister(name: str) -> None:
    """Remove a plugin's variant `name` (the built-ins stay)."""
    if name in _BUILTIN:
        raise ValueError(f"variant '{name}' is a built-in")
    _REGISTRY.pop(name, None)


def register(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    family: str = "plugin",
    attends: str = "positions",
    cost: str = "",
    paper: str = "",
    branches: tuple[str, ...] | list[str] | None = None,
) -> None:
    """Add variant `name`: `factory(channels, **options)` returns a module mapping (B, C, H, W)
    to the same shape. Its options are its keyword parameters after `channels`, checked like
    the built-ins' (type from the annotation, else from the default). `branches`: a composite's
    parallel single-module branches (registered names); default: the module is its own branch."""
    plugin = _SOURCE
    where = f"variants.register({name!r})" + (f" in plugin {plugin}" if plugin else "")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise DanetError(f"{where}: the name must be a word (letters, digits, _ or -)")
    if not callable(factory):
        raise DanetError(
            f"{where}: the factory must be callable (an nn.Module class, or a function of "
            f"channels returning one), got {type(factory).__name__} {factory!r}"
        )
    old = _REGISTRY.get(name)
    if old is not None and _origin(old.factory) != _origin(factory):  # else: the same, again
        by = "a built-in" if name in _BUILTIN else f"registered by {old.source}"
        raise DanetError(
            f"{where}: the name '{name}' is taken ({by}: {'.'.join(_origin(old.factory))}); "
            "give yours another name"
        )
    branches = tuple(branches) if branches else (name,)
    for b in branches:
        if b != name and b not in _REGISTRY:
            raise unknown_choice(f"branch in {where}", b, _REGISTRY)
    source = plugin or (getattr(factory, "__module__", "?") if _BUILTIN_DONE else "")
    _REGISTRY[name] = VariantInfo(name, factory, family, attends, cost, paper, branches, source)
    if not _BUILTIN_DONE:
        _BUILTIN.add(name)


def _origin(factory: Any) -> tuple[str, str]:
    """(file or module, qualified name): the same for a file's class imported twice."""
    module = getattr(factory, "__module__", None) or "?"
    where = getattr(sys.modules.get(module), "__file__", None) or module
    return where, getattr(factory, "__qualname__", repr(factory))


def is_builtin(name: str) -> bool:
    return name in _BUILTIN


_BUILTIN_DONE = False
DANET = "Fu et al., Dual Attention Network for Scene Segmentation, CVPR 2019"
register("none", Identity, family="baseline", attends="nothing", cost="0", paper="dilated FCN")
register(
    "pam",
    PAM,
    family="danet",
    attends="positions",
    cost="N^2 (C/8 + C) + 1.25 N C^2",
    paper=DANET,
)
register("cam", CAM, family="danet", attends="channels", cost="2 N C^2", paper=DANET)
register(
    "danet",
    DualAttention,
    family="danet",
    attends="both",
    cost="pam + cam",
    paper=DANET,
    branches=("pam", "cam"),
)
register(
    "sagan",
    SelfAttention,
    family="self-attention",
    attends="positions",
    cost="N M (C/8 + C/2) + 1.25 N C^2, M = N/4 pooled keys",
    paper="Zhang et al., Self-Attention Generative Adversarial Networks, ICML 2019",
)
register(
    "nonlocal",
    NonLocal,
    family="non-local",
    attends="positions",
    cost="N^2 C + 2 N C^2",
    paper="Wang et al., Non-local Neural Networks, CVPR 2018",
)
register(
    "ccnet",
    CrissCross,
    family="criss-cross",
    attends="positions (row and column)",
    cost="R (1.125 N (H+W) C + 1.25 N C^2)",
    paper="Huang et al., CCNet: Criss-Cross Attention for Semantic Segmentation, ICCV 2019",
)
register(
    "se",
    SE,
    family="gating",
    attends="channels",
    cost="2 N C + C^2/8",
    paper="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
)
register(
    "cbam",
    CBAM,
    family="gating",
    attends="both",
    cost="6 N C + 98 N + C^2/4",
    paper="Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018",
)
register(
    "eca",
    ECA,
    family="gating",
    attends="channels",
    cost="2 N C + k C",
    paper="Wang et al., ECA-Net: Efficient Channel Attention, CVPR 2020",
)
register(
    "gc",
    GC,
    family="global context",
    attends="both",
    cost="3 N C + C^2/4",
    paper="Cao et al., GCNet: Non-local Networks Meet Squeeze-Excitation Networks, ICCVW 2019",
)
register(
    "ema",
    EMAttention,
    family="expectation-maximization",
    attends="positions (via K bases)",
    cost="(2 T + 3) N C K + 2 N C^2, K = 64 bases, T = 3 steps",
    paper="Li et al., Expectation-Maximization Attention Networks, ICCV 2019",
)
register(
    "efficient",
    EfficientAttention,
    family="linear attention",
    attends="positions (via C/2 x C/2 context)",
    cost="2 N d_k d_v + 2.5 N C^2, d = C/2",
    paper="Shen et al., Efficient Attention: Attention with Linear Complexities, WACV 2021",
)
register(
    "coord",
    CoordAttention,
    family="gating",
    attends="both (per row and per column)",
    cost="2 (H + W) C m, m = max(8, C/32)",
    paper="Hou et al., Coordinate Attention for Efficient Mobile Network Design, CVPR 2021",
)
register(
    "triplet",
    TripletAttention,
    family="gating",
    attends="both (three axis pairs)",
    cost="2 k^2 (C (H + W) + N), k = 7",
    paper="Misra et al., Rotate to Attend: Convolutional Triplet Attention Module, WACV 2021",
)
register(
    "simam",
    SimAM,
    family="gating (parameter-free)",
    attends="positions (within each channel)",
    cost="0 (element-wise only, about 10 N C operations)",
    paper="Yang et al., SimAM: A Simple, Parameter-Free Attention Module for CNNs, ICML 2021",
)
register(
    "external",
    ExternalAttention,
    family="external memory",
    attends="positions (via S memory units)",
    cost="2 N C^2 + 2 N C S, S = 64 units",
    paper="Guo et al., Beyond Self-attention: External Attention using Two Linear Layers, "
    "arXiv 2105.02358",
)
PSA = "Liu et al., Polarized Self-Attention: Towards High-quality Pixel-wise Regression, "
register(
    "psa_p",
    PolarizedParallel,
    family="polarized",
    attends="both (a channel and a spatial gate, summed)",
    cost="1.5 N C^2 + 2 N C + C^2/2",
    paper=PSA + "arXiv 2107.00782 (parallel)",
)
register(
    "psa_s",
    PolarizedSequential,
    family="polarized",
    attends="both (a channel gate, then a spatial gate)",
    cost="1.5 N C^2 + 2 N C + 3 C^2/16",
    paper=PSA + "arXiv 2107.00782 (sequential)",
)
register(
    "a2net",
    DoubleAttention,
    family="double attention",
    attends="positions (via n global descriptors)",
    cost="2 N C (m + n) + 2 N m n, m = n = C/4 (1.125 N C^2)",
    paper="Chen et al., A^2-Nets: Double Attention Networks, NeurIPS 2018",
)
register(
    "isa",
    InterlacedSparseAttention,
    family="sparse self-attention",
    attends="positions (interlaced groups, then blocks)",
    cost="7 P C^2 + 2 N C^2 + 1.5 P C (P/64 + 64), P = N padded to whole 8x8 blocks",
    paper="Huang et al., Interlaced Sparse Self-Attention for Semantic Segmentation, IJCV 2021",
)
register(
    "dnl",
    DisentangledNonLocal,
    family="non-local",
    attends="positions (whitened pairwise + unary)",
    cost="1.5 N^2 C + 2 N C^2 + 2 N C",
    paper="Yin et al., Disentangled Non-Local Neural Networks, ECCV 2020",
)
register(
    "glore",
    GloRe,
    family="graph reasoning",
    attends="positions (via C/4 graph nodes)",
    cost="1.5 N C^2 + 3 C^3/32",
    paper="Chen et al., Graph-Based Global Reasoning Networks, CVPR 2019",
)
register(
    "ann",
    AsymmetricPyramidNonLocal,
    family="non-local",
    attends="positions (110 pyramid-pooled anchors)",
    cost="3.5 N C^2 + 110 N C",
    paper="Zhu et al., Asymmetric Non-local Neural Networks for Semantic Segmentation, ICCV 2019",
)
register(
    "ham",
    Hamburger,
    family="matrix decomposition",
    attends="positions (via R = 64 NMF bases)",
    cost="(2T + 3) N C R + (2T + 1) R^2 (N + C) + 2 N C^2, R = 64, T = 7 steps (6 in training)",
    paper="Geng et al., Is Attention Better Than Matrix Decomposition?, ICLR 2021",
)
register(
    "axial",
    AxialBlock,
    family="axial attention",
    attends="positions (column, then row)",
    cost="2 N C^2 + 1.75 N C (H + W)",
    paper="Wang et al., Axial-DeepLab: Stand-Alone Axial-Attention for Panoptic Segmentation, "
    "ECCV 2020",
)
_BUILTIN_DONE = True


def available() -> list[str]:
    """Registered names, the DANet ablation first (none, pam, cam, danet), then the others."""
    return list(_REGISTRY)


def info(name: str) -> VariantInfo:
    if name not in _REGISTRY:
        raise unknown_choice("variant", name, _REGISTRY)
    return _REGISTRY[name]


def options(name: str) -> dict[str, object]:
    """The keyword options a variant accepts, with their defaults."""
    params = list(inspect.signature(info(name).factory).parameters.values())[1:]  # channels
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params if p.kind in keyword}


def _unknown_option(name: str, key: str, valid) -> DanetError:
    listed = ", ".join(sorted(valid)) or "none"
    return DanetError(
        f"unknown option '{key}' for variant '{name}'{did_you_mean(key, valid)}; "
        f"valid options: {listed}"
    )


# Option values are checked here, for every variant, from the constructor's signature: the
# type from its annotation (else its default's type), and numbers must be positive (counts,
# reductions, ratios, widths, kernel sizes) unless this table gives another range.
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "kernel_size": (odd_kernel, "a positive odd integer"),
    "spatial_kernel_size": (odd_kernel, "a positive odd integer"),
    "key_channels": (lambda v: v >= 0, "0 (half the input channels) or a positive integer"),
    "value_channels": (lambda v: v >= 0, "0 (half the input channels) or a positive integer"),
    "momentum": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),  # EMA's moving average of bases
    "beta": (math.isfinite, "a finite number"),  # ECA's offset in its kernel-size formula
    "dropout": (lambda v: 0 <= v < 1, "a number in [0, 1)"),  # ISA's and ANN's Dropout2d
}
def _option_types(name: str) -> dict[str, Any]:
    """Option -> its type: the constructor's annotation, else its default's type (Any)."""
    factory = info(name).factory
    try:
        hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    except Exception:  # a plugin's annotation that does not resolve: typed by its default
        hints = {}
    return {
        key: hints.get(key, Any if default in (None, inspect.Parameter.empty) else type(default))
        for key, default in options(name).items()
    }


def check_options(name: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The options of variant `name`, checked (names, types, ranges) and typed; a DanetError
    names the variant, the option, the value and what is valid."""
    types_ = _option_types(name)
    checked = {}
    for key, value in opts.items():
        if key not in types_:
            raise _unknown_option(name, key, types_)
        what = type_name(types_[key])
        try:  # the config's own type check (YAML's 1e-3 is a string, true is no number)
            value, ok = coerce(key, value, types_[key], name), True
        except DanetError:
            ok = False
        if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            positive = "a positive number" if "number" in what else "a positive integer"
            valid, what = RANGES.get(key, (lambda v: v > 0 and math.isfinite(v), positive))
            ok = bool(valid(value))
        if not ok:
            raise DanetError(
                f"variant '{name}': model.variant_opts.{key} must be {what}, got {value!r}"
            )
        checked[key] = value
    return checked


def create(name: str, channels: int, **opts) -> nn.Module:
    v = info(name)
    module = v.factory(channels, **check_options(name, opts))
    if not isinstance(module, nn.Module):
        raise DanetError(
            f"variant '{name}'{_from(v)}: its factory returned {type(module).__name__}, not a "
            "torch.nn.Module; register an nn.Module class or a function returning one"
        )
    return module


def _from(v: VariantInfo) -> str:
    return f" (plugin {v.source})" if v.source else ""


def check_shape(name: str, opts: dict[str, Any], channels: int = 16) -> None:
    """Build variant `name` for `channels` channels and run it on a (1, channels, 8, 8) input:
    a DanetError unless it returns a tensor of that shape (the head's slot needs it)."""
    import torch

    v = info(name)
    x = torch.randn(1, channels, 8, 8)
    try:
        module = create(name, channels, **opts)
        with torch.no_grad():
            out = module.eval()(x)
    except DanetError:
        raise
    except Exception as e:
        raise DanetError(
            f"variant '{name}'{_from(v)} failed on a {tuple(x.shape)} input: {one_line(e)}"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != tuple(x.shape):
        raise DanetError(
            f"variant '{name}'{_from(v)} changes the shape of its input: {tuple(x.shape)} -> "
            f"{shape}; an attention module must return a tensor of its input's (B, C, H, W)"
        )


def branch_options(name: str, opts: dict) -> list[dict]:
    """Split a composite variant's options among its branches (each goes where it is accepted)."""
    branches = info(name).branches
    if branches == (name,):
        return [dict(opts)]
    per_branch: list[dict] = [{} for _ in branches]
    for key, value in opts.items():
        takers = [i for i, b in enumerate(branches) if key in options(b)]
        if not takers:
            raise _unknown_option(name, key, {k for b in branches for k in options(b)})
        for i in takers:
            per_branch[i][key] = value
    return per_branch
