import numpy as np
import pytest
import torch
from torch import nn

from danet import config as C
from danet.data import synthetic
from danet.data.transforms import normalize, to_tensors
from danet.errors import DanetError
from danet.models import Backbone, Segmentor

OFFICIAL_HEAD = {"conv5a", "conv5c", "sa", "sc", "conv51", "conv52", "conv6", "conv7", "conv8"}


def _model(variant: str, **kw) -> Segmentor:
    torch.manual_seed(0)
    return Segmentor(C.ModelConfig(variant=variant, **kw), num_classes=8)


def test_danet_head_has_official_layout_and_three_outputs():
    m = _model("danet").eval()
    assert {k.split(".")[1] for k in m.state_dict() if k.startswith("head.")} == OFFICIAL_HEAD
    assert "head.sa.query_conv.weight" in m.state_dict() and "head.sc.gamma" in m.state_dict()
    outs = m(torch.randn(2, 3, 64, 48))
    assert len(outs) == 3 and all(o.shape == (2, 8, 64, 48) for o in outs)


@pytest.mark.parametrize("variant", ["none", "pam", "cam"])
def test_single_module_heads_share_the_skeleton(variant):
    m = _model(variant).eval()
    assert {k.split(".")[1] for k in m.state_dict() if k.startswith("head.")} <= {
        "conv5a",
        "sa",
        "conv51",
        "conv8",
    }
    outs = m(torch.randn(1, 3, 40, 40))
    assert len(outs) == 1 and outs[0].shape == (1, 8, 40, 40)


def test_backbone_output_stride_8():
    for name in ("tiny", "resnet18"):
        b = Backbone(name)
        assert b(torch.randn(1, 3, 64, 96)).shape[-2:] == (8, 12)


def _full_rf(model: nn.Module) -> nn.Module:
    """timm zero-initialises each block's last BN, which hides part of the receptive field
    at initialisation; give every BN weight 1 so the test sees the full one."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
    return model.eval()


def test_receptive_field():
    """The baseline's logit at a pixel depends on input pixels at most 51 px away (Chebyshev):
    backbone 55 px, head convs +32 px, bilinear upsampling one more feature cell."""
    m = _full_rf(_model("none"))
    x = torch.randn(1, 3, 176, 176)
    y0 = m(x)[0]

    def reaches(row: int, offset: int) -> bool:
        x2 = x.clone()
        x2[..., row + offset, :] += 3.0  # a whole input row `offset` px from `row`
        return bool((m(x2)[0] - y0)[..., row, :].abs().max() > 1e-6)

    assert reaches(88, -51)
    assert not any(reaches(r, o) for r in (60, 88, 120) for o in (-52, 52))


def _band_swapped(img: np.ndarray, lab: np.ndarray) -> np.ndarray:
    out = img.copy()
    band = np.isin(lab, (5, 6))
    out[band] = out[band][:, ::-1]  # warm <-> cool (RGB reversed)
    return out


@pytest.mark.parametrize("variant, sees_cue", [("none", False), ("pam", True), ("cam", True)])
def test_only_attention_sees_the_cue(variant, sees_cue):
    """Recolouring the cue band (warm <-> cool) cannot change the baseline's logits on the
    objects, which lie beyond its receptive field; PAM and CAM carry it there."""
    m = _full_rf(_model(variant))
    for p in m.parameters():
        if p.shape == (1,):  # gamma
            nn.init.constant_(p, 1.0)
    img, lab = synthetic.generate(0, "val")
    objects = torch.from_numpy(np.isin(lab, (1, 2, 3, 4)))
    x1 = normalize(to_tensors(img, lab)[0])[None]
    x2 = normalize(to_tensors(_band_swapped(img, lab), lab)[0])[None]
    diff = (m(x1)[0] - m(x2)[0]).abs().amax(1)[0]
    assert bool(diff[objects].max() > 1e-4) == sees_cue


def test_missing_pretrained_file_is_a_clear_error(tmp_path):
    with pytest.raises(DanetError, match="model.pretrained: weights file .*nope.pt' not found"):
        Backbone("tiny", pretrained=str(tmp_path / "nope.pt"))


def _official_head_state(num_classes: int = 19) -> dict[str, torch.Tensor]:
    """A state dict laid out as the official DANetHead(2048, nclass) saves it."""
    state: dict[str, torch.Tensor] = {}

    def conv_bn(prefix: str, cin: int) -> None:
        state[f"{prefix}.0.weight"] = torch.randn(512, cin, 3, 3)
        for name, value in (
            ("weight", 1.0),
            ("bias", 0.0),
            ("running_mean", 0.0),
            ("running_var", 1.0),
        ):
            state[f"{prefix}.1.{name}"] = torch.full((512,), value)
        state[f"{prefix}.1.num_batches_tracked"] = torch.tensor(7)

    for prefix, cin in (("conv5a", 2048), ("conv5c", 2048), ("conv51", 512), ("conv52", 512)):
        conv_bn(prefix, cin)
    for qk in ("query_conv", "key_conv"):
        state[f"sa.{qk}.weight"], state[f"sa.{qk}.bias"] = (
            torch.randn(64, 512, 1, 1),
            torch.randn(64),
        )
    state["sa.value_conv.weight"], state["sa.value_conv.bias"] = (
        torch.randn(512, 512, 1, 1),
        torch.randn(512),
    )
    state["sa.gamma"], state["sc.gamma"] = torch.tensor([0.3]), torch.tensor([0.2])
    for cls in ("conv6", "conv7", "conv8"):
        state[f"{cls}.1.weight"] = torch.randn(num_classes, 512, 1, 1)
        state[f"{cls}.1.bias"] = torch.randn(num_classes)
    return state


def test_official_danet_head_state_dict_loads_strictly():
    from danet.models import DANetHead

    head = DANetHead(2048, 19, "danet")
    official = _official_head_state()
    head.load_state_dict(official, strict=True)
    assert torch.equal(head.sa.query_conv.weight, official["sa.query_conv.weight"])  # a copy
    # published size of the DANet head (docs/reference.md, section 3): 23.95 M parameters
    assert round(sum(p.numel() for p in head.parameters()) / 1e6, 2) == 23.95


@pytest.mark.parametrize(
    "variant, head, branches",
    [
        ("pam", "auto", ("pam",)),
        ("pam", "dual", ("pam", "none")),
        ("danet", "auto", ("pam", "cam")),
        ("none", "dual", ("none", "none")),
    ],
)
def test_head_option_keeps_the_skeleton(variant, head, branches):
    from danet.models.head import head_branches

    assert head_branches(variant, head) == branches
    m = _model(variant, head=head).eval()
    outs = m(torch.randn(1, 3, 32, 32))
    assert len(outs) == (3 if len(branches) == 2 else 1)
    if len(branches) == 2:  # the same reduce and fuse convolutions as DANet's
        dual = _model("danet").state_dict()
        ours = m.state_dict()
        skeleton = [k for k in dual if not k.startswith(("head.sa.", "head.sc."))]
        assert all(ours[k].shape == dual[k].shape for k in skeleton)


def test_two_branch_variant_refuses_single_head():
    with pytest.raises(
        DanetError, match="variant 'danet' has two branches .* needs model.head=dual"
    ):
        _model("danet", head="single")
