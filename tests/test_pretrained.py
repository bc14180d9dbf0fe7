"""Backbone weights come from a local file only: loaded, recorded, never downloaded."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch

from danet.engine.train import run
from danet.errors import DanetError
from danet.models.backbone import BACKBONES, Backbone


def _weights(tmp_path, name: str):
    spec = BACKBONES[name]
    full = timm.create_model(spec.timm_name, **dict(spec.timm_kwargs))  # with its fc, as saved
    path = tmp_path / f"{name}.pth"
    torch.save(full.state_dict(), path)
    return full, path


def test_local_file_loads_without_network(tmp_path, no_network):
    full, path = _weights(tmp_path, "resnet18")
    body = Backbone("resnet18", str(path)).body
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_mean"):
        assert torch.equal(body.state_dict()[key], full.state_dict()[key]), key  # a copy
    scratch = Backbone("resnet18").body
    assert not torch.equal(scratch.state_dict()["conv1.weight"], full.state_dict()["conv1.weight"])


def test_run_records_the_weights_file(tmp_path, tiny_cfg, no_network):
    _, path = _weights(tmp_path, "tiny")
    result = run(tiny_cfg(f"model.pretrained={path}"), tmp_path / "r", progress=False)
    assert result["pretrained"] == {
        "file": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    scratch = run(tiny_cfg(), tmp_path / "s", progress=False)
    assert scratch["pretrained"] is None


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(
        DanetError, match="model.pretrained: weights file .* not found; give a local"
    ):
        Backbone("resnet18", str(tmp_path / "missing.pth"))
