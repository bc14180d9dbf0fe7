"""Attention inside the backbone (model.backbone_attention): where the modules go, that a
ResNet weights file still loads in full, that the model trains and its cost counts them, the
errors for a bad placement, and the run id."""

from __future__ import annotations

import pytest
import timm
import torch

import variants
from danet import config as C
from danet.checks import check_config
from danet.cli import main
from danet.engine.train import run
from danet.errors import DanetError
from danet.models.backbone import Backbone

GC34 = {"variant": "gc", "stages": [3, 4], "where": "block", "opts": {}}


def _resnet18_file(tmp_path):
    """A ResNet-18 weights file as timm saves one (with its classifier)."""
    torch.manual_seed(1)
    full = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    return full.state_dict(), path


def test_resnet18_with_gc_loads_weights_trains_and_counts_its_cost(tmp_path, tiny_cfg):
    state, path = _resnet18_file(tmp_path)
    net = Backbone("resnet18", str(path), attention=GC34)  # raises on a missing backbone tensor
    assert net.attention_names == [f"body.layer{s}.{b}.se" for s in (3, 4) for b in (0, 1)]
    own = net.body.state_dict()
    for key in ("conv1.weight", "layer3.0.bn2.running_var", "layer4.1.conv2.weight"):
        assert torch.equal(own[key], state[key])  # loaded from the file, not left at init

    cfg = tiny_cfg(
        "model.backbone=resnet18",
        "model.variant=none",
        f"model.pretrained={path}",
        "model.backbone_attention={variant: gc, stages: [3, 4], where: block}",
    )
    result = run(cfg, tmp_path / "run", progress=False)
    assert result["iterations"] == 4 and 0 <= result["miou"] <= 1
    # the head has no attention (none): the attention columns are the inserted modules alone
    inserted = 2 * sum(p.numel() for c in (256, 512) for p in variants.create("gc", c).parameters())
    assert result["cost"]["params_attention"] == inserted > 0
    assert result["cost"]["gmacs_attention"] > 0


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        (GC34, [f"layer{s}.{b}.se" for s in (3, 4) for b in (0, 1)]),
        ({"variant": "nonlocal", "stages": [4]}, ["layer4.attn"]),  # the paper's place: stage
    ],
)
def test_identity_at_init_and_timm_names_kept(spec, names):
    plain = Backbone("resnet18").eval()
    spec = C.from_dict({"model": {"backbone_attention": spec}}).model.backbone_attention
    inside = Backbone("resnet18", attention=spec).eval()
    missing, unexpected = inside.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(tuple(f"body.{n}." for n in names))
                                              for k in missing)
    assert inside.attention_names == [f"body.{n}" for n in names]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # bit for bit: GC adds a branch whose last conv is all zeros, Non-local a BN whose
        # scale and shift are zero, so each adds exact zeros to the same tensor
        assert torch.equal(inside(x), plain(x))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone_attention={variant: gcc, stages: [3]}"],
         "unknown model.backbone_attention.variant 'gcc' (did you mean 'gc'?)"),
        (["model.backbone_attention={variant: none, stages: [3]}"],
         "leave the key empty for none"),
        (["model.backbone_attention={variant: gc, stages: [5]}"],
         "'model.backbone_attention.stages' [5]: backbone 'resnet18' has stages [1, 2, 3, 4]"),
        (["model.backbone=tiny", "model.backbone_attention={variant: gc, stages: [3]}"],
         "backbone 'tiny' has stages [1, 2]"),
        (["model.backbone=effnet-lite0", "model.backbone_attention={variant: se, stages: [4]}"],
         "backbone 'effnet-lite0' has no ResNet stages (not a ResNet)"),
        (["model.backbone_attention={variant: gc, stages: [3], where: middle}"],
         "'model.backbone_attention.where' must be block"),
        (["model.backbone_attention={variant: gc, stage: [3]}"],
         "unknown key 'stage' in 'model.backbone_attention' (did you mean 'stages'?)"),
        (["model.backbone_attention={variant: gc, stages: [3, 3]}"],
         "'model.backbone_attention.stages' must be a list of distinct stage numbers"),
        (["model.backbone_attention={variant: gc, stages: [3], opts: {rd_ratio: -1}}"],
         "model.backbone_attention.opts.rd_ratio must be a positive number"),
        (["model.freeze_backbone=true", "model.pretrained=x.pth",
          "model.backbone_attention={variant: gc, stages: [3]}"],
         "would freeze untrained modules"),
    ],
)
def test_bad_placement_is_one_line(overrides, message):
    with pytest.raises(DanetError, match=None) as e:
        check_config(C.build(None, ["model.backbone=resnet18", *overrides]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    code = main(["train", "--run-dir", str(tmp_path / "r"), "model.backbone=resnet18",
                 "model.backbone_attention={variant: gc, stages: [6]}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has stages [1, 2, 3, 4]" in err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_run_id_names_the_placement_and_keeps_the_old_ids():
    assert C.run_id(C.Config()) == "danet-tiny-synthetic-s0-34fbd820"  # the id before the key
    assert C.run_id(C.build(None, ["model.backbone_attention={}"])) == C.run_id(C.Config())
    with_gc = C.build(None, ["model.backbone=resnet18", "model.backbone_attention="
                                                         "{variant: gc, stages: [4, 3]}"])
    assert with_gc.model.backbone_attention == GC34  # gc's paper place, stages sorted
    assert C.run_id(with_gc).startswith("danet-resnet18+gc@block34-synthetic-s0-")
    stage = "model.backbone_attention={variant: gc, stages: [3, 4], where: stage}"
    other = C.build(None, ["model.backbone=resnet18", stage])
    assert C.run_id(other).startswith("danet-resnet18+gc@stage34-")
    # a saved config reads back to the same config (resume checks it)
    assert C.from_dict(C.to_dict(with_gc)) == with_gc


def test_tables_name_the_placement():
    from analysis.collect import check_result, skeleton

    base = {"variant": "none", "config": {"model": {"backbone_attention": {}}}}
    assert skeleton(base)["variant"] == "none"
    inside = {"variant": "none", "config": {"model": {"backbone_attention": GC34}}}
    row = skeleton(inside)
    assert row["variant"] == "none + gc@block[3,4]" and row["backbone_attention"] == "gc@block[3,4]"
    assert row["module"] == "none"  # the head's module, as before
    assert check_result({**_valid(), "config": inside["config"]}) is None
    bad = {"config": {"model": {"backbone_attention": {"variant": "gc"}}}}  # no stages
    assert "config.model.backbone_attention" in (check_result({**_valid(), **bad}) or "")


def _valid() -> dict:
    return {"run_id": "r", "variant": "none", "backbone": "resnet18", "dataset": "synthetic",
            "setting": "context", "seed": 0, "iterations": 4, "miou": 0.5,
            "pixel_accuracy": 0.5, "params": 1, "head_params": 1, "train_time_s": 1.0,
            "classes": ["a"], "per_class_iou": {"a": 0.5}}


def test_the_head_starts_as_in_the_run_without_it():
    from danet.models.segmentor import Segmentor

    models = []
    for spec in ({}, GC34):
        torch.manual_seed(0)
        cfg = C.ModelConfig(backbone="resnet18", variant="pam", backbone_attention=spec)
        models.append(Segmentor(cfg, 4))
    plain, inside = (m.head.state_dict() for m in models)
    assert all(torch.equal(plain[k], inside[k]) for k in plain)
