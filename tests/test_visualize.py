"""`danet visualize`: PAM attention rows of chosen points and CAM's channel maps, as PNGs."""

from __future__ import annotations

import pytest
import torch

from analysis.visualize import attention_maps, load_image, main
from danet.engine.eval_saved import load_saved
from danet.engine.train import run
from danet.errors import DanetError


def test_maps_and_pngs_for_a_danet_run(tiny_cfg, tmp_path):
    run(tiny_cfg("model.variant=danet"), tmp_path / "r", progress=False)
    cfg, model, _, _ = load_saved(tmp_path / "r")
    img = load_image("val:1", cfg)
    maps, cam_out, channels = attention_maps(model, img, [(5, 5), (60, 30)])
    assert set(maps) == {(5, 5), (60, 30)}
    for m in maps.values():  # a softmax row over every position of the 8x8 feature grid
        assert m.shape == (8, 8) and torch.allclose(m.sum(), torch.tensor(1.0), atol=1e-5)
    assert not torch.equal(maps[(5, 5)], maps[(60, 30)])
    assert cam_out.shape[0] == 64 and len(channels) == 6
    assert cam_out[channels[0]].mean() >= cam_out[channels[-1]].mean()

    out = tmp_path / "vis"
    assert main([str(tmp_path / "r"), "val:1", "--points", "5,5", "60,30", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cam_channels.png", "pam_point_5_5.png", "pam_point_60_30.png"]
    assert all((out / n).stat().st_size > 2000 for n in names)


def test_a_run_without_pam_or_cam_is_refused(tiny_cfg, tmp_path):
    run(tiny_cfg("model.variant=se"), tmp_path / "r", progress=False)
    with pytest.raises(DanetError, match="neither PAM nor CAM"):
        main([str(tmp_path / "r"), "val:0", "--out", str(tmp_path / "vis")])
    run(tiny_cfg("model.variant=cam"), tmp_path / "c", progress=False)
    assert main([str(tmp_path / "c"), "val:0", "--out", str(tmp_path / "cv")]) == 0
    assert [p.name for p in (tmp_path / "cv").iterdir()] == ["cam_channels.png"]
    with pytest.raises(DanetError, match="outside the 64x64 image"):
        main([str(tmp_path / "c"), "val:0", "--points", "64,1", "--out", str(tmp_path / "x")])
