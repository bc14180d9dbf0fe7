"""The recipes in experiments/: what a dry run resolves must match the published settings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from danet.errors import DanetError
from slurm.grid import expand, load_grid

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def _dry_run(grid: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "danet.cli", "sweep", str(EXPERIMENTS / grid), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_table1_dry_run_matches_the_paper_recipe():
    """The official code at tag v0.5.0 and issue #30 (docs/reference.md, section 1): the 7x7
    stem, crop 768 of the short side scaled to 1024 without random scaling, batch 8,
    180 x 371 iterations, SGD 0.9 / 1e-4, head lr x10, poly 0.9, lr 0.01 with one loss and
    0.003 for PAM+CAM with three losses 1:1:1."""
    text = _dry_run("danet_table1_cityscapes.yaml")
    shared = dict(re.findall(r"^  ([a-z_.]+): (.*)$", text.split("per run:")[0], flags=re.M))
    assert shared["data.name"] == "cityscapes" and shared["data.crop_size"] == "768"
    assert shared["data.base_size"] == "1024" and shared["train.batch_size"] == "8"
    assert shared["data.scale_mode"] == "danet-v0.5.0"
    assert shared["data.scale_range"] == "[1.0, 1.0]" and shared["model.multi_grid"] == "[]"
    assert shared["train.iterations"] == str(180 * 371)
    assert shared["train.weight_decay"] == "0.0001" and shared["train.momentum"] == "0.9"
    assert shared["train.head_lr_mult"] == "10.0" and shared["train.poly_power"] == "0.9"
    assert shared["train.loss_weights"] == "[1.0, 1.0, 1.0]"
    assert shared["eval.crop_size"] == "768" and shared["eval.modes"].startswith("[flip")
    runs = re.findall(r"^  (\S+)  (.*)  -> ", text.split("per run:")[1], flags=re.M)
    assert len(runs) == 10  # Table 1's 4 variants and DANet's matched control, 2 backbones
    lrs = {rid.split("-")[0] + "-" + rid.split("-")[1]: own for rid, own in runs}
    for backbone in ("resnet50", "resnet101"):  # none (dual): DANet's head, losses and lr
        control = [own for rid, own in runs if rid.startswith(f"none-dual-{backbone}-")]
        assert len(control) == 1 and "train.lr=0.003" in control[0]
    for backbone in ("resnet50", "resnet101"):  # the 7x7 stem, as at v0.5.0
        for variant in ("none", "pam", "cam"):
            assert "train.lr=0.01" in lrs[f"{variant}-{backbone}"]
        assert "train.lr=0.003" in lrs[f"danet-{backbone}"]
    # one loss for the single-module heads, three for DANet's dual head
    from danet.models.head import head_branches

    assert [len(head_branches(v)) for v in ("none", "pam", "cam", "danet")] == [1, 1, 1, 2]


def test_released_danet101_recipe_matches_its_training_command(tmp_path):
    """README.md at v0.5.0: resnet101 (7x7 stem), --base-size 1024 --crop-size 768 with random
    short-side scaling 0.75-2.0, --epochs 240 --batch-size 8 --lr 0.003, multi-grid 4 8 16."""
    (spec,) = expand(load_grid(EXPERIMENTS / "danet101_released_cityscapes.yaml"), tmp_path)
    cfg = spec.cfg
    assert (cfg.model.backbone, cfg.model.variant, cfg.model.multi_grid) == (
        "resnet101", "danet", (4, 8, 16),
    )
    assert (cfg.data.scale_mode, cfg.data.base_size, cfg.data.crop_size) == (
        "danet-v0.5.0", 1024, 768,
    )
    assert cfg.data.scale_range == (0.75, 2.0) and cfg.data.flip
    assert cfg.train.iterations == 240 * (2975 // 8) and cfg.train.batch_size == 8
    assert cfg.train.lr == 0.003 and cfg.train.head_lr_mult == 10.0
    assert cfg.train.weight_decay == 1e-4 and cfg.train.loss_weights == (1.0, 1.0, 1.0)
    assert cfg.eval.modes[0] == "flip" and cfg.eval.crop_size == 768


def test_no_recipe_scales_the_long_side_for_the_official_code():
    """A recipe that cites the official code at tag v0.5.0 scales the short side, as that code
    does (DANet master's long side is a later change)."""
    for path in EXPERIMENTS.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if "v0.5.0" in path.read_text():
            assert data["config"]["data"]["scale_mode"] == "danet-v0.5.0", path.name


@pytest.mark.parametrize("grid", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_every_recipe_expands_and_states_its_source(grid, tmp_path):
    text = (EXPERIMENTS / grid).read_text()
    assert text.startswith("#"), "a recipe opens with a comment saying where it comes from"
    specs = expand(load_grid(EXPERIMENTS / grid), tmp_path)
    assert specs and len({s.run_id for s in specs}) == len(specs)


def test_mmseg_recipes_follow_the_model_zoo_settings(tmp_path):
    grid = load_grid(EXPERIMENTS / "danet_d8_4xb2_cityscapes-512x1024.yaml")
    for iters, overrides in ((80000, []), (40000, ["train.iterations=40000"])):
        specs = expand(grid, tmp_path, overrides)
        assert [s.cfg.model.backbone for s in specs] == ["resnet50c", "resnet101c"]
        cfg = specs[0].cfg
        assert cfg.data.crop_size == (512, 1024) and cfg.data.base_size == (2048, 1024)
        assert cfg.train.iterations == iters and cfg.train.batch_size == 8
        assert cfg.train.weight_decay == 5e-4 and cfg.train.head_lr_mult == 1.0
        assert cfg.eval.modes == ("whole", "msflip")


def _grid_file(tmp_path, grid) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "grid": grid}, sort_keys=False))
    return path


def test_bundle_axes_set_keys_together(tmp_path):
    path = _grid_file(
        tmp_path,
        {"variant": [{"model.variant": "pam", "train.lr": 0.02}, {"model": {"variant": "cam"}}],
         "seed": [0, 1]},
    )
    specs = expand(load_grid(path), tmp_path)
    assert [(s.cfg.model.variant, s.cfg.train.lr, s.cfg.seed) for s in specs] == [
        ("pam", 0.02, 0), ("pam", 0.02, 1), ("cam", 0.01, 0), ("cam", 0.01, 1),
    ]


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"variant": ["pam", {"model.variant": "cam"}]}, "mixes mappings and plain values"),
        ({"model.varient": ["pam"]}, "did you mean 'model.variant'"),
        ({"variant": [{"model.varient": "pam"}]}, "unknown config key 'model.varient'"),
    ],
)
def test_bad_axes_are_named(tmp_path, grid, message):
    with pytest.raises(DanetError, match=message):
        expand(load_grid(_grid_file(tmp_path, grid)), tmp_path)
