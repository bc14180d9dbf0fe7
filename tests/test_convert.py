"""Multi-grid (layer4 dilations) and loading PyTorch-Encoding's DANet checkpoints.

ResNet-101 is built twice per module (`source`, `fresh`) and only ever sees 64 px inputs."""

import numpy as np
import pytest
import torch

from danet.config import ModelConfig
from danet.errors import DanetError
from danet.models import Backbone, Segmentor
from danet.models.backbone import set_multi_grid
from danet.models.convert import encoding_to_danet, load_weights

R101 = dict(backbone="resnet101s", variant="danet")


def _to_encoding(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Segmentor keys -> PyTorch-Encoding's, written independently of danet.models.convert."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.body."):
            out["pretrained." + key[len("backbone.body.") :]] = value.clone()
        else:
            assert key.startswith("head."), key
            out[key] = value.clone()
    return out


def _checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """As PyTorch-Encoding's save_checkpoint writes it; best_pred is a numpy float there."""
    optimizer = {"state": {}, "param_groups": [{"lr": 0.003, "momentum": 0.9, "params": [0]}]}
    return {
        "epoch": 240,
        "state_dict": state,
        "optimizer": optimizer,
        "best_pred": np.float64(79.93),
    }


@pytest.fixture(scope="module")
def source() -> Segmentor:
    """The released configuration: 19 Cityscapes classes, multi-grid (4, 8, 16)."""
    torch.manual_seed(0)
    return Segmentor(ModelConfig(**R101, multi_grid=(4, 8, 16)), 19).eval()


@pytest.fixture(scope="module")
def fresh() -> Segmentor:
    torch.manual_seed(1)
    return Segmentor(ModelConfig(**R101), 19).eval()


@pytest.fixture(scope="module")
def official(source) -> dict[str, torch.Tensor]:
    state = _to_encoding(source.state_dict())
    state["pretrained.fc.weight"] = torch.randn(1000, 2048)
    state["pretrained.fc.bias"] = torch.randn(1000)
    return state


@pytest.fixture(scope="module")
def files(official, tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("encoding")
    plain, wrapped = root / "checkpoint.pth.tar", root / "dataparallel.pth.tar"
    torch.save(_checkpoint(official), plain)
    torch.save(_checkpoint({"module." + k: v for k, v in official.items()}), wrapped)
    return {"plain": plain, "module.": wrapped}


# --- multi-grid ---------------------------------------------------------------------------


def _dilations(model: Segmentor, layer: str) -> list[tuple[int, int]]:
    return [b.conv2.dilation for b in getattr(model.backbone.body, layer)]


def test_multi_grid_sets_layer4_dilations_and_padding(source, fresh):
    layer4 = list(source.backbone.body.layer4)
    assert [b.conv2.dilation for b in layer4] == [(4, 4), (8, 8), (16, 16)]
    assert [b.conv2.padding for b in layer4] == [(4, 4), (8, 8), (16, 16)]
    assert _dilations(fresh, "layer4") == [(2, 2), (4, 4), (4, 4)]  # timm's output_stride=8
    assert _dilations(source, "layer3") == _dilations(fresh, "layer3")
    assert _dilations(fresh, "layer3")[:2] == [(1, 1), (2, 2)]


def test_multi_grid_keeps_shapes_and_takes_effect(source):
    x = torch.randn(1, 3, 64, 64)
    body = source.backbone.body
    # timm zero-initialises each block's last BN, which would hide conv2; restored below
    bn3 = [block.bn3.weight for block in body.layer4]
    saved = [w.detach().clone() for w in bn3]
    with torch.no_grad():
        outs = source(x)
        try:
            for w in bn3:
                w.fill_(1.0)
            feat = source.backbone(x)
            set_multi_grid(body, "resnet101s", (2, 4, 4))  # timm's default, same weights
            feat_default = source.backbone(x)
        finally:
            set_multi_grid(body, "resnet101s", (4, 8, 16))
            for w, s in zip(bn3, saved):
                w.copy_(s)
    assert [o.shape for o in outs] == [(1, 19, 64, 64)] * 3
    assert feat.shape == feat_default.shape == (1, 2048, 8, 8)
    assert not torch.allclose(feat, feat_default)


@pytest.mark.parametrize(
    "name, grid, match",
    [
        ("tiny", (4, 8, 16), r"model.multi_grid=\[4,8,16\]: backbone 'tiny' has no dilated layer4"),
        ("resnet18", (4, 8, 16), r"'resnet18' has 2 blocks in layer4.*model.multi_grid=\[4,8\]"),
        ("resnet18", (4, 0), r"give one dilation >= 1 per block"),
    ],
)
def test_multi_grid_errors(name, grid, match):
    with pytest.raises(DanetError, match=match):
        Backbone(name, multi_grid=grid)


def test_segmentor_passes_multi_grid_through():
    with pytest.raises(DanetError, match="model.multi_grid"):
        Segmentor(ModelConfig(backbone="tiny", multi_grid=(4, 8, 16)), 8)


# --- the PyTorch-Encoding layout ----------------------------------------------------------


def test_official_key_names(official):
    for key in (
        "pretrained.conv1.0.weight",
        "pretrained.conv1.1.running_mean",
        "pretrained.conv1.3.weight",
        "pretrained.conv1.4.weight",
        "pretrained.conv1.6.weight",
        "pretrained.bn1.running_var",
        "pretrained.layer1.0.downsample.0.weight",
        "pretrained.layer1.0.downsample.1.weight",
        "pretrained.layer3.22.conv2.weight",  # ResNet-101: 23 blocks in layer3
        "pretrained.layer4.2.bn3.weight",
        "pretrained.fc.weight",
        "head.conv5a.0.weight",
        "head.conv5c.1.running_var",
        "head.sa.query_conv.weight",
        "head.sa.key_conv.bias",
        "head.sa.value_conv.weight",
        "head.sa.gamma",
        "head.sc.gamma",
        "head.conv51.0.weight",
        "head.conv52.1.weight",
        "head.conv6.1.weight",
        "head.conv7.1.bias",
        "head.conv8.1.weight",
    ):
        assert key in official, key
    assert "pretrained.layer4.22.conv2.weight" not in official
    assert "pretrained.layer3.23.conv2.weight" not in official
    assert official["pretrained.conv1.0.weight"].shape == (64, 3, 3, 3)
    assert official["pretrained.conv1.6.weight"].shape == (128, 64, 3, 3)
    assert official["head.conv8.1.weight"].shape == (19, 512, 1, 1)
    assert {k.split(".")[0] for k in official} == {"pretrained", "head"}


@pytest.mark.parametrize("variant", ["plain", "module."])
def test_loading_reproduces_every_tensor(files, source, fresh, variant):
    ours = source.state_dict()
    assert not torch.equal(fresh.state_dict()["head.conv5a.0.weight"], ours["head.conv5a.0.weight"])
    assert load_weights(fresh, files[variant]) == "pytorch-encoding"
    loaded = fresh.state_dict()
    assert loaded.keys() == ours.keys()
    assert all(torch.equal(loaded[k], ours[k]) for k in ours)  # exact: a copy, no arithmetic
    fresh.head.conv5a[0].weight.data.add_(1.0)  # differ again for the next load


def test_head_has_the_published_size(fresh):
    """DANet's head at 2048 -> 19 classes: 23.95 M parameters (docs/reference.md, section 3)."""
    assert abs(sum(p.numel() for p in fresh.head.parameters()) / 1e6 - 23.95) < 0.01


def test_wrong_class_count_names_key_and_shapes(official, fresh, tmp_path):
    state = dict(official)
    for cls in ("conv6", "conv7", "conv8"):
        state[f"head.{cls}.1.weight"] = torch.randn(21, 512, 1, 1)
        state[f"head.{cls}.1.bias"] = torch.randn(21)
    path = tmp_path / "ade.pth.tar"
    torch.save({"state_dict": state, "epoch": 1}, path)
    before = fresh.head.conv8[1].weight.clone()
    with pytest.raises(DanetError) as info:
        load_weights(fresh, path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert "head.conv6.1.weight has shape (21, 512, 1, 1) in the file but (19, 512, 1, 1)" in msg
    assert "(and 5 more)" in msg and "21 classes, the model 19" in msg
    assert torch.equal(fresh.head.conv8[1].weight, before)  # nothing loaded


def test_encoding_to_danet_renames_and_drops():
    t = torch.zeros(1)
    state = {
        "module.pretrained.conv1.0.weight": t,
        "module.pretrained.fc.weight": t,
        "module.auxlayer.conv5.0.weight": t,
        "module.auxlayer.conv5.4.bias": t,
        "module.head.sc.gamma": t,
    }
    assert encoding_to_danet({"state_dict": state, "epoch": 3}) == {
        "backbone.body.conv1.0.weight": t,
        "head.sc.gamma": t,
    }
    with pytest.raises(DanetError, match=r"1 keys outside pretrained.\* and head.\* \(se.fc\)"):
        encoding_to_danet({"pretrained.bn1.weight": t, "se.fc": t})


# --- our own layouts and errors, on the tiny backbone --------------------------------------


def _tiny(variant: str = "danet", seed: int = 0) -> Segmentor:
    torch.manual_seed(seed)
    return Segmentor(ModelConfig(variant=variant), 8)


def test_our_layouts_load(tmp_path):
    src, dst = _tiny(seed=0), _tiny(seed=1)
    state = src.state_dict()
    for name, content in (
        ("run.pt", {"model": state, "iteration": 100}),
        ("plain.pt", state),
        ("ddp.pt", {"state_dict": {"module." + k: v for k, v in state.items()}}),
    ):
        torch.save(content, tmp_path / name)
        dst.head.conv8[1].bias.data.add_(1.0)
        assert load_weights(dst, tmp_path / name) == "danet-bench"
        assert all(torch.equal(v, state[k]) for k, v in dst.state_dict().items())  # a copy


def test_missing_bn_counters_are_tolerated(tmp_path):
    src, dst = _tiny(seed=0), _tiny(seed=1)
    old = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": _to_encoding(old)}, tmp_path / "old.pth")
    assert load_weights(dst, tmp_path / "old.pth") == "pytorch-encoding"
    assert torch.equal(dst.head.sa.query_conv.weight, src.head.sa.query_conv.weight)  # a copy


def test_key_mismatch_counts_and_hints(tmp_path):
    torch.save(_tiny("danet").state_dict(), tmp_path / "danet.pt")
    with pytest.raises(DanetError) as info:
        load_weights(_tiny("pam"), tmp_path / "danet.pt")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'danet.pt'} (danet-bench layout)") and "\n" not in msg
    assert "0 keys missing from the file (-)" in msg and "unexpected (head.conv5c.0.weight" in msg
    assert "model.variant" in msg and "class count" in msg


def test_stem_mismatch_hint(tmp_path):
    """tiny (resnet10t) has a deep stem; a file with a 7x7 one points at resnet101."""
    state = _to_encoding(_tiny().state_dict())
    state = {k: v for k, v in state.items() if not k.startswith("pretrained.conv1.")}
    state["pretrained.conv1.weight"] = torch.randn(16, 3, 7, 7)
    torch.save({"state_dict": state}, tmp_path / "no_deepstem.pth")
    with pytest.raises(DanetError, match="7x7 stem .*model.backbone=resnet101"):
        load_weights(_tiny(), tmp_path / "no_deepstem.pth")


def test_unreadable_and_missing_files(tmp_path):
    model = _tiny()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file\n" * 10)
    torch.save(model.state_dict(), tmp_path / "whole.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes((tmp_path / "whole.pt").read_bytes()[:5000])
    for path in (junk, torn):
        with pytest.raises(DanetError, match="not a readable torch weights file") as info:
            load_weights(model, path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    with pytest.raises(DanetError, match="nope.pth: weights file not found"):
        load_weights(model, tmp_path / "nope.pth")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(DanetError, match="other.pt: not a DANet weights file"):
        load_weights(model, tmp_path / "other.pt")
