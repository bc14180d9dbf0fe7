"""`danet visualize`: the position-attention rows of chosen points (PAM, SAGAN, Non-local) and
CAM's channel maps, as PNGs with colour bars; every other variant refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import variants
import variants.danet
import variants.non_local
import variants.sagan
from analysis.visualize import (
    attention_maps,
    attention_row,
    channel_figure,
    feature_cell,
    load_image,
    main,
    point_figure,
    query_key,
)
from danet.data import num_classes
from danet.engine.eval_saved import load_saved
from danet.engine.train import run
from danet.errors import DanetError
from danet.models.segmentor import Segmentor


def _pngs(out) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def test_maps_and_pngs_for_a_danet_run(tiny_cfg, tmp_path):
    run(tiny_cfg("model.variant=danet"), tmp_path / "r", progress=False)
    cfg, model, _, _ = load_saved(tmp_path / "r")
    img = load_image("val:1", cfg)
    maps = attention_maps(model, img, [(5, 5), (60, 30)])
    assert maps.module == "PAM" and maps.grid == (8, 8) and maps.key_stride == 1
    assert set(maps.rows) == {(5, 5), (60, 30)}
    for m in maps.rows.values():  # a softmax row over every position of the 8x8 feature grid
        assert m.shape == (8, 8) and torch.allclose(m.sum(), torch.tensor(1.0), atol=1e-5)
    assert not torch.equal(maps.rows[(5, 5)], maps.rows[(60, 30)])
    assert maps.cam_out.shape[0] == 64 and len(maps.channels) == 6
    assert maps.cam_out[maps.channels[0]].mean() >= maps.cam_out[maps.channels[-1]].mean()

    out = tmp_path / "vis"
    assert main([str(tmp_path / "r"), "val:1", "--points", "5,5", "60,30", "--out", str(out)]) == 0
    names = _pngs(out)
    assert names == ["cam_channels.png", "pam_point_5_5.png", "pam_point_60_30.png"]
    for n in names:
        with Image.open(out / n) as im:
            assert round(im.info["dpi"][0]) >= 200 and (out / n).stat().st_size > 2000


@pytest.mark.parametrize("variant", ["sagan", "nonlocal"])
def test_sagan_and_nonlocal_runs_draw_their_rows(variant, tiny_cfg, tmp_path):
    run(tiny_cfg(f"model.variant={variant}"), tmp_path / "r", progress=False)
    cfg, model, _, _ = load_saved(tmp_path / "r")
    maps = attention_maps(model, load_image("val:0", cfg), [(5, 5), (60, 30)])
    keys = (4, 4) if variant == "sagan" else (8, 8)  # SAGAN's keys: 2x2-pooled 8x8 grid
    assert maps.grid == (8, 8) and maps.cam_out is None
    for m in maps.rows.values():
        assert m.shape == keys and torch.allclose(m.sum(), torch.tensor(1.0), atol=1e-5)
    out = tmp_path / "vis"
    assert main([str(tmp_path / "r"), "val:0", "--points", "5,5", "--out", str(out)]) == 0
    assert _pngs(out) == [f"{variant}_point_5_5.png"]


def _attend_spy(monkeypatch, module_of) -> list:
    """Record (q, k, v, out) of every `attend` call the module's forward makes."""
    calls, real = [], module_of.attend

    def spy(q, k, v, impl="auto"):
        out = real(q, k, v, impl)
        calls.append((q, k, v, out))
        return out

    monkeypatch.setattr(module_of, "attend", spy)
    return calls


@pytest.mark.parametrize(
    "name, opts, module_of",
    [
        ("pam", {"impl": "efficient"}, variants.danet),
        ("pam", {"impl": "naive"}, variants.danet),
        ("sagan", {"impl": "efficient"}, variants.sagan),
        ("nonlocal", {"impl": "efficient"}, variants.non_local),
    ],
)
def test_rows_are_the_weights_the_module_applies(name, opts, module_of, monkeypatch):
    """Every query's row equals the naive map softmax(q k) of the q and k that the module's
    own forward passes to `attend` (whatever impl it runs), and weighting the module's values
    by it gives the module's output at that query."""
    torch.manual_seed(0)
    module = variants.create(name, 16, **opts).eval()
    x = torch.randn(1, 16, 7, 5)  # odd sides: SAGAN's ceil-mode pooling keeps the last ones
    calls = _attend_spy(monkeypatch, module_of)
    with torch.no_grad():
        module(x)
        query, key, grid = query_key(module, x)
        q, k, v, out = calls[0]
        naive = torch.softmax(torch.bmm(q, k), dim=-1)  # attention_naive's map
        assert grid == ((4, 3) if name == "sagan" else (7, 5))
        for i in range(35):
            row = attention_row(module, query, key, i)
            assert torch.allclose(row.sum(), torch.tensor(1.0), atol=1e-6)
            assert torch.allclose(row, naive[0, i], atol=1e-6)
            assert torch.allclose(v[0] @ row, out[0, :, i], atol=1e-5)


@pytest.mark.parametrize("impl", ["naive", "efficient"])
def test_nonlocal_dot_product_rows_are_its_weights(impl):
    """Non-local's dot-product mode weights by theta . phi / N (no softmax): its output y,
    as the block feeds it to W, is g weighted by the rows."""
    torch.manual_seed(0)
    module = variants.create("nonlocal", 16, mode="dot_product", impl=impl).eval()
    x = torch.randn(1, 16, 6, 6)
    seen = {}
    module.W.register_forward_pre_hook(lambda m, i: seen.__setitem__("y", i[0]))
    with torch.no_grad():
        module(x)
        query, key, _ = query_key(module, x)
        g = module.g(x).flatten(2)[0]
        y = seen["y"].flatten(2)[0]
        for i in range(36):
            assert torch.allclose(g @ attention_row(module, query, key, i), y[:, i], atol=1e-5)


def test_feature_cell_follows_the_align_corners_upsampling():
    assert feature_cell((0, 0), (64, 64), (8, 8)) == (0, 0)
    assert feature_cell((63, 63), (64, 64), (8, 8)) == (7, 7)
    assert feature_cell((63, 0), (64, 64), (8, 8)) == (0, 7)  # (row, col) of pixel (x, y)
    assert feature_cell((32, 9), (64, 64), (8, 8)) == (1, 4)


def test_figures_have_a_colour_bar_and_the_query_marked():
    rgb = np.zeros((64, 48, 3))
    weights = np.random.default_rng(0).random((64, 48))
    fig = point_figure(rgb, weights, (40, 12), "PAM attention")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "attention weight"
    (mark,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "query"]
    assert list(mark.get_xdata()) == [40] and list(mark.get_ydata()) == [12]
    assert mark.get_markeredgecolor() == "white"
    fig = channel_figure(rgb, torch.rand(8, 4, 3), [2, 5])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "CAM output" in bars[0].get_ylabel()


@pytest.mark.parametrize(
    "variant, why",
    [
        ("none", "it has no attention module"),
        ("eca", "it reweights channels"),
        ("cbam", "one sigmoid map"),
        ("gc", "one global context"),
        ("ccnet", "its own row and column"),
        ("ema", "EM bases"),
        ("efficient", "never forms the map"),
    ],
)
def test_variants_without_a_position_map_are_refused_by_name(variant, why, tiny_cfg):
    cfg = tiny_cfg(f"model.variant={variant}")
    model = Segmentor(cfg.model, num_classes(cfg.data))
    with pytest.raises(DanetError, match=f"variant '{variant}' forms no position-attention map"):
        try:
            attention_maps(model, torch.zeros(1, 3, 64, 64), [(1, 1)])
        except DanetError as e:
            assert why in str(e) and "visualize a pam, danet, sagan or nonlocal run" in str(e)
            raise


def test_a_run_without_pam_or_cam_is_refused(tiny_cfg, tmp_path, capsys):
    run(tiny_cfg("model.variant=se"), tmp_path / "r", progress=False)
    with pytest.raises(DanetError, match=r"variant 'se' .* \(it reweights channels\)"):
        main([str(tmp_path / "r"), "val:0", "--out", str(tmp_path / "vis")])
    cam = str(tmp_path / "c")
    run(tiny_cfg("model.variant=cam"), tmp_path / "c", progress=False)
    assert main([cam, "val:0", "--out", str(tmp_path / "cv")]) == 0
    assert _pngs(tmp_path / "cv") == ["cam_channels.png"]
    assert main([cam, "val:0", "--points", "3,3", "--out", str(tmp_path / "p")]) == 0
    assert "variant 'cam' forms no position-attention map" in capsys.readouterr().err
    with pytest.raises(DanetError, match="outside the 64x64 image"):
        main([cam, "val:0", "--points", "64,1", "--out", str(tmp_path / "x")])
