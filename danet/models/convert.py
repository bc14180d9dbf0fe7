"""Load weights into a Segmentor: our run checkpoints, plain Segmentor state dicts, and the
official DANet layout of PyTorch-Encoding (junfu1115/DANet, zhanghang1989/PyTorch-Encoding).

The official model is `DANet(BaseNet)`: the ResNet in `self.pretrained`, `DANetHead` in
`self.head` (encoding/models/sseg/base.py and danet.py). Its checkpoints are
`{'epoch', 'state_dict', 'optimizer', 'best_pred'}` (experiments/segmentation/train.py), with
a `module.` prefix on every key when saved from DataParallel. After unwrapping 'state_dict'
and stripping `module.`, the keys map as follows:

    PyTorch-Encoding key                           danet-bench key
    ---------------------------------------------  ------------------------------------------
    pretrained.conv1.{0,3,6}.weight  (deep stem)   backbone.body.conv1.{0,3,6}.weight
    pretrained.conv1.{1,4}.*         (stem BNs)    backbone.body.conv1.{1,4}.*
    pretrained.conv1.weight          (7x7 stem)    backbone.body.conv1.weight
    pretrained.bn1.*                               backbone.body.bn1.*
    pretrained.layerN.i.{conv,bn}{1,2,3}.*         backbone.body.layerN.i.{conv,bn}{1,2,3}.*
    pretrained.layerN.0.downsample.{0,1}.*         backbone.body.layerN.0.downsample.{0,1}.*
    pretrained.fc.{weight,bias}                    dropped (the ImageNet classifier)
    head.{conv5a,conv5c,conv51,conv52}.{0,1}.*     head.<same>  (conv, BN; .2 is the ReLU)
    head.sa.{query,key,value}_conv.*               head.<same>  (PAM)
    head.sa.gamma, head.sc.gamma                   head.<same>  (PAM's and CAM's scales)
    head.{conv6,conv7,conv8}.1.*                   head.<same>  (classifiers; .0 is Dropout2d)
    auxlayer.conv5.{0,1,4}.*                       dropped (see below)

So the backbone is a prefix swap: timm's ResNet and PyTorch-Encoding's both use torchvision's
names (conv1/bn1/layer1..4/downsample), and the head names are the official ones (head.py).

- `pretrained.fc.*`: PyTorch-Encoding's older BaseNet keeps the classifier, the newer one
  sets `pretrained.fc = None`, so it may or may not be in the file; it is never used.
- `auxlayer.*`: the FCN auxiliary head on layer3 (`--aux`; FCNHead(1024, nclass), conv5 =
  conv, BN, ReLU, Dropout, conv) that other PyTorch-Encoding models (FCN, EncNet, DeepLab)
  carry. It only adds a training loss, DANet's prediction is the head's fused output, and
  we have no such module, so it is dropped (junfu1115/DANet's model_mapping.py deletes the
  same keys).
- `*.num_batches_tracked`: BatchNorm counters that files from before PyTorch 0.4.1 lack;
  a missing one keeps the model's value (it plays no part at evaluation). Everything else
  loads strictly: every other key must be present on both sides with the same shape.

Which backbone: PyTorch-Encoding's ResNets have the deep stem 64-64-128 by default
(ResNet(deep_stem=True); resnet50s/101s force it), as timm's resnet50s/resnet101s. The
official test command of the released DANet101.pth.tar (junfu1115/DANet README.md,
experiments/segmentation/test_danet.sh) is
`--backbone resnet101 --multi-grid --multi-dilation 4 8 16 --os 8 --aux --no-deepstem`:
a 7x7 stem, i.e. model.backbone=resnet101 with model.multi_grid=[4,8,16]. Multi-grid
changes no weight, so a file loads with or without it; only the predictions differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from danet.errors import DanetError, one_line

LAYOUTS = ("danet-bench", "pytorch-encoding")
DROPPED = ("pretrained.fc.", "auxlayer.")  # PyTorch-Encoding keys with no counterpart here
BACKBONE, HEAD, ENCODING_BACKBONE = "backbone.body.", "head.", "pretrained."
CLASSIFIERS = ("head.conv6.", "head.conv7.", "head.conv8.")


def _numpy_scalar_globals() -> list:
    """What torch.load(weights_only=True) needs to read numpy scalars, e.g. PyTorch-Encoding's
    'best_pred' ((pixAcc + mIoU) / 2 from numpy): the scalar constructor, under numpy 2's
    name and numpy 1's, and the numeric dtypes. No code runs beyond building a number."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefd"]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def unwrap(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict inside {'state_dict': ...}, without DataParallel's `module.` prefix."""
    inner = state.get("state_dict")
    if isinstance(inner, Mapping):
        state = inner
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def encoding_to_danet(state: Mapping[str, Any]) -> dict[str, Any]:
    """A PyTorch-Encoding DANet state dict (or checkpoint) in Segmentor's key names.

    Unwraps 'state_dict', strips `module.`, renames `pretrained.X` to `backbone.body.X`,
    keeps `head.X`, drops `pretrained.fc.*` and `auxlayer.*` (module docstring); any other
    key is a DanetError."""
    out: dict[str, Any] = {}
    unexpected: list[str] = []
    for key, value in unwrap(state).items():
        if key.startswith(DROPPED):
            continue
        if key.startswith(ENCODING_BACKBONE):
            out[BACKBONE + key.removeprefix(ENCODING_BACKBONE)] = value
        elif key.startswith(HEAD):
            out[key] = value
        else:
            unexpected.append(key)
    if unexpected:
        raise DanetError(
            f"{len(unexpected)} keys outside pretrained.* and head.* ({_few(unexpected)}); "
            "not a PyTorch-Encoding DANet state dict"
        )
    return out


def read_weights(path: str | Path) -> tuple[dict[str, Any], str]:
    """The Segmentor state dict in a weights file and its layout (one of LAYOUTS).

    Layouts: our run checkpoint ({"model": state dict, ...}), a plain Segmentor state dict
    (keys backbone.* / head.*), or PyTorch-Encoding's (keys pretrained.* / head.*), each
    maybe wrapped as {'state_dict': ...} and with a `module.` prefix."""
    path = Path(path)
    if not path.is_file():
        raise DanetError(
            f"{path}: weights file {'is not a file' if path.exists() else 'not found'}"
        )
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a torn or foreign file
        raise DanetError(f"{path}: not a readable torch weights file ({one_line(e)})") from None
    if not isinstance(raw, Mapping):
        raise DanetError(f"{path}: holds a {type(raw).__name__}, not a state dict")
    if isinstance(raw.get("model"), Mapping):
        state, layout = unwrap(raw["model"]), "danet-bench"
    else:
        state = unwrap(raw)
        if any(k.startswith("backbone.") for k in state):
            layout = "danet-bench"
        elif any(k.startswith((ENCODING_BACKBONE, HEAD)) for k in state):
            layout = "pytorch-encoding"
            try:
                state = encoding_to_danet(state)
            except DanetError as e:
                raise DanetError(f"{path}: {e}") from None
        else:
            raise DanetError(
                f"{path}: not a DANet weights file (keys: {_few(list(state))}); expected a "
                "danet-bench checkpoint or state dict (backbone.*, head.*) or a "
                "PyTorch-Encoding one (pretrained.*, head.*)"
            )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise DanetError(f"{path}: {_few(bad)} not tensors; not a state dict")
    return state, layout


def _key_hint(missing: list[str], unexpected: list[str]) -> str:
    keys = missing + unexpected
    hints = []
    if BACKBONE + "conv1.weight" in unexpected and BACKBONE + "conv1.0.weight" in missing:
        hints.append(
            "the file's ResNet has a 7x7 stem (PyTorch-Encoding's --no-deepstem, as the "
            "released DANet101): use model.backbone=resnet101 (or resnet50, resnet18/34)"
        )
    elif BACKBONE + "conv1.0.weight" in unexpected and BACKBONE + "conv1.weight" in missing:
        hints.append(
            "the file's ResNet has a deep stem (conv1.0/3/6): use model.backbone=resnet101s "
            "(or resnet50s, resnet50c/101c, tiny)"
        )
    elif any(k.startswith(BACKBONE) for k in keys):
        hints.append("check model.backbone (e.g. resnet101 vs resnet50: layer3 has 23 vs 6 blocks)")
    if any(k.startswith(HEAD) for k in keys):
        hints.append("check model.variant and model.head (the official head: model.variant=danet)")
    hints.append("model.backbone, model.variant and the class count must match the file")
    return "; ".join(hints)


def _shape_hint(key: str, theirs: torch.Size, ours: torch.Size) -> str:
    if key.startswith(CLASSIFIERS) and theirs[1:] == ours[1:]:
        return (
            f"the file has {theirs[0]} classes, the model {ours[0]}: the class count (the "
            "dataset) must match"
        )
    if key.startswith(HEAD):
        return "check model.head_channels and model.variant (the official head is 512 wide)"
    return "check model.backbone (e.g. resnet101s has the stem 64-64-128, resnet101c 32-32-64)"


def load_weights(model: nn.Module, path: str | Path) -> str:
    """Load a weights file into `model` strictly (module docstring); return its layout."""
    state, layout = read_weights(path)
    own = model.state_dict()
    for key in own:  # BN counters absent from old files keep the model's value
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise DanetError(
            f"{path} ({layout} layout): the model and the file differ: {len(missing)} keys "
            f"missing from the file ({_few(missing) or '-'}), {len(unexpected)} unexpected "
            f"({_few(unexpected) or '-'}); {_key_hint(missing, unexpected)}"
        )
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        key = wrong[0]
        theirs, ours = state[key].shape, own[key].shape
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise DanetError(
            f"{path} ({layout} layout): {key} has shape {tuple(theirs)} in the file but "
            f"{tuple(ours)} in the model{more}; {_shape_hint(key, theirs, ours)}"
        )
    model.load_state_dict(state, strict=True)
    return layout
