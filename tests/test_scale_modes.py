"""data.scale_mode: the random rescale of the official DANet code at tag v0.5.0 (short side),
of DANet master (long side) and of mmsegmentation (keep-ratio); docs/reference.md, section 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from danet.data import build_dataset
from danet.data.transforms import scaled_size, train_augment
from slurm.grid import expand, load_grid

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _recipe(name: str, tmp_path: Path, *overrides: str):
    specs = expand(load_grid(EXPERIMENTS / name), tmp_path / "runs", list(overrides))
    return specs[-1].cfg  # the Table 1 grid's last run: DANet-101


def _cityscapes_frame(root: Path) -> None:
    """One 2048x1024 training frame whose pixels encode their own position: R = x % 256,
    G = x // 256 + 8 (y // 256), B = y % 256; labelIds 7, 8, 11, 12 (trainIds 0-3, none
    ignored), so a crop tells where it was cut and whether anything was padded."""
    y, x = np.mgrid[0:1024, 0:2048]
    rgb = np.stack([x % 256, x // 256 + 8 * (y // 256), y % 256], -1).astype(np.uint8)
    raw = np.array([7, 8, 11, 12], np.uint8)[(x // 3 + y // 5) % 4]
    stem = "aachen_000000_000019"
    for folder, suffix, array in (
        ("leftImg8bit", "leftImg8bit", rgb), ("gtFine", "gtFine_labelIds", raw),
    ):
        path = root / folder / "train" / "aachen" / f"{stem}_{suffix}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)


def _where(crop: torch.Tensor) -> tuple[int, int, bool]:
    """(y, x) in the frame of a normalised crop's top-left pixel before the flip, and the flip."""
    rgb = ((crop * STD[:, None, None] + MEAN[:, None, None]) * 255).round().long()
    flipped = bool(rgb[0, 0, 1] != (rgb[0, 0, 0] + 1) % 256)  # x grows to the right unflipped
    r, g, b = rgb[:, 0, -1 if flipped else 0].tolist()
    return b + 256 * (g // 8), r + 256 * (g % 8), flipped


def test_table1_crops_are_cut_from_the_unscaled_frame(tmp_path):
    """Table 1 (base 1024 on the short side, no random scaling): each 768x768 crop is a window
    of the native 2048x1024 frame, bit for bit (no resampling happens, so equality is exact
    by construction), flipped or not, with no padding (no ignored label)."""
    root = tmp_path / "cityscapes"
    _cityscapes_frame(root)
    cfg = _recipe("danet_table1_cityscapes.yaml", tmp_path, f"data.root={root}")
    assert cfg.model.backbone == "resnet101" and cfg.data.scale_mode == "danet-v0.5.0"
    ds = build_dataset(cfg.data, "train")
    image, label = ds.load(0)
    frame = ((torch.tensor(image).permute(2, 0, 1).float() / 255 - MEAN[:, None, None])
             / STD[:, None, None])
    label = torch.tensor(label).long()
    seen = set()
    for draw in range(6):
        img, lab = ds[(0, draw)]
        assert img.shape == (3, 768, 768) and lab.shape == (768, 768)
        assert not (lab == 255).any()
        y, x, flipped = _where(img)
        assert 0 <= y <= 1024 - 768 and 0 <= x <= 2048 - 768
        want_img, want_lab = frame[:, y : y + 768, x : x + 768], label[y : y + 768, x : x + 768]
        if flipped:
            want_img, want_lab = want_img.flip(-1), want_lab.flip(-1)
        assert torch.equal(img, want_img) and torch.equal(lab, want_lab)
        seen.add((y, x, flipped))
    assert len(seen) > 1  # the crop is random


def test_released_recipe_draws_the_short_side_in_768_to_2048(tmp_path):
    """The released DANet-101 (short side 0.75-2.0 x 1024): the short side of a 2048x1024 frame
    is an integer in 768..2048 and the long side twice it; 768x768 crops are never padded."""
    cfg = _recipe("danet101_released_cityscapes.yaml", tmp_path)
    d = cfg.data
    assert (d.scale_mode, d.base_size, d.scale_range, d.crop_size) == (
        "danet-v0.5.0", 1024, (0.75, 2.0), 768,
    )
    assert cfg.model.backbone == "resnet101" and cfg.model.multi_grid == (4, 8, 16)
    gen = torch.Generator().manual_seed(0)
    sizes = [scaled_size(1024, 2048, d.base_size, d.scale_range, gen, d.scale_mode)
             for _ in range(2000)]
    shorts = np.array([h for h, _ in sizes])
    assert all(w == 2 * h for h, w in sizes)
    assert shorts.min() >= 768 and shorts.max() <= 2048
    assert shorts.min() < 775 and shorts.max() > 2040  # spread over the whole range
    img, lab = torch.zeros(3, 1024, 2048), torch.zeros(1024, 2048, dtype=torch.long)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        out, out_lab = train_augment(img, lab, d.crop_size, d.scale_range, d.flip, g,
                                     255, d.base_size, d.scale_mode)
        assert out.shape == (3, 768, 768) and not (out_lab == 255).any()


def test_v050_draws_every_integer_short_side_and_rounds_the_long_side_down():
    """random.randint(int(base*0.75), int(base*2.0)) includes both ends; the other side is
    int(long * short / short_before), rounded down, for landscape and portrait alike."""
    gen = torch.Generator().manual_seed(1)
    shorts = {scaled_size(40, 80, 8, (0.75, 2.0), gen, "danet-v0.5.0")[0] for _ in range(500)}
    assert shorts == set(range(6, 17))
    assert scaled_size(1001, 600, 300, (1.0, 1.0), gen, "danet-v0.5.0") == (500, 300)
    assert scaled_size(600, 1001, 300, (1.0, 1.0), gen, "danet-v0.5.0") == (300, 500)
    assert scaled_size(50, 50, 0, (1.0, 1.0), gen, "danet-v0.5.0") == (50, 50)  # 0: own size


def test_v050_pads_below_the_crop_with_ignore():
    """A short side below the crop is padded at the bottom / right: image 0, label ignore."""
    img, lab = torch.ones(3, 30, 60), torch.zeros(30, 60, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    out, out_lab = train_augment(img, lab, 48, (1.0, 1.0), False, gen, 255, 30, "danet-v0.5.0")
    assert out.shape == (3, 48, 48)
    assert torch.equal(out_lab[30:], torch.full((18, 48), 255))
    assert not (out_lab[:30] == 255).any() and (out[:, 30:] == 0).all() and (out[:, :30] == 1).all()


@pytest.mark.parametrize(
    "base, mode", [(1024, "danet-master"), ((2048, 1024), "mmseg"), (0, "danet-master")]
)
def test_auto_is_the_mode_base_size_implied_before(base, mode):
    """auto keeps the draws runs made before data.scale_mode existed: a side is the long side
    (DANet master), [long, short] mmseg's keep-ratio scale."""
    for seed in range(5):
        a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert scaled_size(1024, 2048, base, (0.5, 2.0), a, "auto") == scaled_size(
            1024, 2048, base, (0.5, 2.0), b, mode
        )
    gen = torch.Generator().manual_seed(0)
    assert scaled_size(512, 1024, 1024, (1.0, 1.0), gen, "danet-master") == (512, 1024)
    assert scaled_size(1000, 1000, (2048, 512), (1.0, 1.0), gen, "mmseg") == (512, 512)


def test_runs_from_before_scale_mode_keep_their_ids_and_folders(tmp_path):
    """At its default (auto) data.scale_mode is left out of the run id (config.ADDED_LATER), and
    a run folder whose config.yaml predates the key still matches its config."""
    import yaml

    from danet import config as C

    assert C.run_id(C.Config()) == "danet-tiny-synthetic-s0-34fbd820"  # the id before the key
    assert C.run_id(C.build(None, ["data.scale_mode=danet-v0.5.0"])) != C.run_id(C.Config())
    old = C.to_dict(C.Config())
    del old["data"]["scale_mode"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    C.write_or_check(tmp_path / "config.yaml", C.Config())  # raises on a different config
