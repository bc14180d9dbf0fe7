"""The frozen-feature protocol (model.freeze_backbone): the backbone's features of every image
cached once per machine, only the head trains, and a torn cache is rebuilt, never trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from danet.checks import check_config
from danet.engine.train import run
from danet.errors import DanetError

FROZEN = ["model.freeze_backbone=true", "data.crop_size=64", "train.iterations=6",
          "eval.every=3"]


@pytest.fixture
def weights(tmp_path) -> str:
    """The tiny backbone's weights in a file: the protocol needs weights to freeze."""
    body = timm.create_model("resnet10t", stem_width=16, channels=(48, 96, 192, 384))
    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    torch.save(body.state_dict(), path)
    return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DANET_CACHE", str(folder))
    return folder / "features"


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_only_the_head_trains_and_the_cache_is_read_back(tmp_path, tiny_cfg, weights, cache):
    cfg = tiny_cfg(*FROZEN, f"model.pretrained={weights}")
    first = run(cfg, tmp_path / "a", progress=False)
    built = {role: e["built"] for role, e in first["feature_cache"].items()}
    assert built == {"train": True, "train-mirror": True, "val": True}
    assert len(_entries(cache)) == 3
    assert first["frozen_backbone"] and first["cost"]["backbone"] == "frozen"
    ckpt = sorted((tmp_path / "a" / "ckpt").glob("*.pt"))[-1]
    state = torch.load(ckpt, weights_only=True)["model"]
    loaded = torch.load(weights, weights_only=True)
    assert all(torch.equal(state[f"backbone.body.{k}"], v) for k, v in loaded.items()
               if f"backbone.body.{k}" in state)
    head = [k for k in state if k.startswith("head.conv5a.0")]
    assert head and not torch.equal(state[head[0]], run_init_head(cfg)[head[0]])
    again = run(cfg.__class__(**{**cfg.__dict__, "seed": 1}), tmp_path / "b", progress=False)
    assert not any(e["built"] for e in again["feature_cache"].values())  # all read


def run_init_head(cfg) -> dict:
    from danet.models import Segmentor
    from danet.utils import seed_everything

    seed_everything(cfg.seed)
    return Segmentor(cfg.model, 8).state_dict()


def test_a_torn_entry_is_rebuilt_and_gives_the_same_run(tmp_path, tiny_cfg, weights, cache):
    cfg = tiny_cfg(*FROZEN, f"model.pretrained={weights}")
    first = run(cfg, tmp_path / "a", progress=False)
    for entry in _entries(cache):
        data = entry / "features.npy"
        with open(data, "r+b") as f:  # a torn write: the file ends early
            f.truncate(data.stat().st_size // 2)
    second = run(cfg, tmp_path / "b", progress=False)
    assert all(e["built"] for e in second["feature_cache"].values())
    assert second["miou"] == first["miou"]  # exact: the same features, weights and kernels
    flipped = _entries(cache)[0] / "labels.npy"
    raw = bytearray(flipped.read_bytes())
    raw[-1] ^= 1  # one altered byte, same size
    flipped.write_bytes(bytes(raw))
    third = run(cfg, tmp_path / "c", progress=False)
    assert sum(e["built"] for e in third["feature_cache"].values()) == 1
    assert third["miou"] == first["miou"]


def test_two_runs_starting_together_build_each_entry_once(tmp_path, tiny_cfg, weights, cache):
    """Two processes, one config each (seeds 0 and 1): every entry is built by one of them."""
    code = (
        "import sys, json; from danet import config as C; from danet.engine.train import run; "
        "cfg = C.build(None, sys.argv[2:]); r = run(cfg, sys.argv[1], progress=False); "
        "print(json.dumps(r['feature_cache']))"
    )
    from tests.conftest import TINY

    args = [*TINY, *FROZEN, f"model.pretrained={weights}"]
    env = {**os.environ, "DANET_CACHE": str(cache.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"r{s}"), *args, f"seed={s}"],
                         stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parents[1])
        for s in (0, 1)
    ]
    records = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0
        records.append(json.loads(out.strip().splitlines()[-1]))
    for role in ("train", "train-mirror", "val"):
        assert sum(r[role]["built"] for r in records) == 1, role
        assert records[0][role]["path"] == records[1][role]["path"]
    assert len(_entries(cache)) == 3


def test_frozen_crop_and_weights_are_checked(tiny_cfg, weights):
    with pytest.raises(DanetError, match="must be a multiple of 8 with model.freeze_backbone"):
        check_config(tiny_cfg(*FROZEN, "data.crop_size=60", f"model.pretrained={weights}"))
    with pytest.raises(DanetError, match="random features"):
        check_config(tiny_cfg(*FROZEN))


def test_crops_align_labels_with_feature_cells(tmp_path, tiny_cfg, weights, cache):
    """A crop's label rows 8y..8(y+h) are the label rows under feature cells y..y+h."""
    from danet.engine import distributed
    from danet.engine.train import frozen_features, setup

    cfg = tiny_cfg(*FROZEN, f"model.pretrained={weights}", "data.crop_size=32")
    r = setup(cfg, tmp_path / "run", distributed.SINGLE)
    plain = r.train_set.plain
    for draw in range(6):
        feats, label = r.train_set[(draw % 4, draw)]
        assert feats.shape == (96, 4, 4) and label.shape == (32, 32)
        entry = r.train_set.mirror if _flipped(r, draw) else plain
        full = torch.from_numpy(entry.features[draw % 4].copy())
        hits = [(y, x) for y in range(full.shape[1] - 3) for x in range(full.shape[2] - 3)
                if torch.equal(full[:, y : y + 4, x : x + 4], feats)]
        y, x = hits[0]
        lab = torch.from_numpy(entry.labels[draw % 4].astype("int64"))
        assert torch.equal(lab[8 * y : 8 * y + 32, 8 * x : 8 * x + 32], label)
    del frozen_features


def _flipped(r, draw: int) -> bool:
    from danet.data.sampler import seed_from

    gen = torch.Generator().manual_seed(seed_from(r.cfg.seed, draw))
    return float(torch.rand((), generator=gen)) < 0.5


def test_resume_reaches_the_uninterrupted_result(tmp_path, tiny_cfg, weights, cache):
    cfg = tiny_cfg(*FROZEN, f"model.pretrained={weights}")
    whole = run(cfg, tmp_path / "whole", progress=False)
    assert run(cfg, tmp_path / "parts", stop_after=4, progress=False) is None
    resumed = run(cfg, tmp_path / "parts", progress=False)
    assert resumed["miou"] == whole["miou"]  # exact: same thread count, same kernels
