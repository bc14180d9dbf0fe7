import math

import pytest
import torch
from torch import nn

from danet.config import EvalConfig, ModelConfig
from danet.engine import inference as inf
from danet.errors import DanetError
from danet.models import Segmentor


class PerPixel(nn.Module):
    """A 1x1 conv: its logits at a pixel depend on that pixel only, so windows cannot matter."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x)]


@pytest.fixture(scope="module")
def tiny() -> Segmentor:
    torch.manual_seed(0)
    model = Segmentor(ModelConfig(backbone="tiny", variant="danet"), num_classes=4).eval()
    # DANet's attention gammas start at 0 (identity); make them matter so context does too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return model


@pytest.mark.parametrize("crop,stride", [(4, 2), (5, 3), (8, 5), (7, 7), (1, 1)])
def test_window_starts_even_symmetric_and_official_count(crop, stride):
    for length in range(1, 4 * crop + 8):
        starts = inf.window_starts(length, crop, stride)
        if length <= crop:
            assert starts == [0]
            continue
        span = length - crop
        n = math.ceil(span / stride) + 1
        assert len(starts) == n
        assert starts[0] == 0 and starts[-1] == span
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(1 <= g <= stride for g in gaps), (length, starts)
        mirrored = [span - s for s in reversed(starts)]
        if n % 2 == 1 and span % 2 == 1:
            # No integer centre exists; only the middle window is off, by half a pixel.
            mid = n // 2
            assert starts[mid] == (span + 1) // 2
            assert starts[:mid] + starts[mid + 1 :] == mirrored[:mid] + mirrored[mid + 1 :]
        else:
            assert starts == mirrored, (length, starts)


def test_window_starts_examples():
    assert inf.window_starts(1024, 768, 512) == [0, 256]
    assert inf.window_starts(2048, 768, 512) == [0, 427, 853, 1280]  # official: 0, 512, 1024, 1536
    assert inf.window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert inf.window_starts(9, 4, 2) == [0, 2, 3, 5]  # span 5: gaps 2, 1, 2
    assert inf.window_starts(7, 4, 2) == [0, 2, 3]  # span 3, 3 windows: no integer centre


@pytest.mark.parametrize("h,w", [(37, 29), (13, 45), (30, 30)])
def test_slide_covers_every_pixel_and_matches_whole_for_per_pixel_model(h, w):
    crop, stride_rate = (16, 20), 2 / 3
    stride = (int(crop[0] * stride_rate), int(crop[1] * stride_rate))
    boxes = inf.window_boxes(h, w, crop, stride)
    covered = torch.zeros(h, w, dtype=torch.int64)
    for y0, y1, x0, x1 in boxes:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1

    model = PerPixel().eval()
    torch.manual_seed(1)
    x = torch.randn(1, 3, h, w)
    with torch.inference_mode():
        slid = inf.slide_logits(model, x, crop, stride_rate)
        whole = inf.whole_logits(model, x)
    assert slid.shape == whole.shape == (1, 5, h, w)
    assert torch.allclose(slid, whole, atol=1e-6, rtol=0)


def test_slide_depends_on_windows_for_a_context_model(tiny):
    # Guards the test above: with a real model, sliding is not the same as one pass.
    torch.manual_seed(2)
    x = torch.randn(1, 3, 27, 41)
    with torch.inference_mode():
        slid = inf.slide_logits(tiny, x, (16, 16), 2 / 3)
        whole = inf.whole_logits(tiny, x)
    assert slid.shape == whole.shape
    assert not torch.allclose(slid, whole, atol=1e-4)


def test_msflip_is_exactly_flip_invariant(tiny):
    torch.manual_seed(3)
    x = torch.randn(1, 3, 23, 31)
    args = ((16, 16), 2 / 3, (0.75, 1.0, 1.25))
    with torch.inference_mode():
        a = inf.msflip_logits(tiny, x.flip(-1), *args)
        b = inf.msflip_logits(tiny, x, *args).flip(-1)
        # The model itself is not flip-equivariant, so the invariance comes from msflip.
        plain = inf.slide_logits(tiny, x.flip(-1), (16, 16), 2 / 3)
        plain_back = inf.slide_logits(tiny, x, (16, 16), 2 / 3).flip(-1)
    assert a.shape == (1, 4, 23, 31)
    # Each scale's pair is bit-exact, but the flip moves elements between logaddexp's vector
    # body and scalar tail, which can differ by an ulp (AVX2: 1.2e-7 at 1 of 2852 elements).
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(plain, plain_back, atol=1e-4)


def test_msflip_single_scale_no_flip_is_slide(tiny):
    torch.manual_seed(4)
    x = torch.randn(1, 3, 21, 35)
    with torch.inference_mode():
        ms = inf.msflip_logits(tiny, x, (16, 16), 2 / 3, (1.0,), flip=False)
        slid = inf.slide_logits(tiny, x, (16, 16), 2 / 3)
        two = inf.msflip_logits(tiny, x, (16, 16), 2 / 3, (1.0, 1.0), flip=False)
    assert torch.equal(ms, slid)  # exact: resizing to the same size returns the input itself
    assert torch.allclose(two, slid + math.log(2), atol=1e-5)  # log(2 * exp(l))


def test_resize_to():
    assert inf.resize_to(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert inf.resize_to(480, 640, (2048, 512)) == (512, 683)
    assert inf.resize_to(640, 480, (2048, 512)) == (683, 512)
    assert inf.resize_to(300, 500, ()) == (300, 500)
    assert inf.resize_to(100, 100, (50, 40)) == (40, 40)
    assert inf.resize_to(5, 10, (5, 5)) == (3, 5)  # 2.5 rounds half up, like mmcv
    for bad in [(512,), (2048, 0), (2048, -1), (2048.0, 512), (2048, 512, 1), (True, 512)]:
        with pytest.raises(DanetError, match="eval.resize"):
            inf.resize_to(480, 640, bad)


def test_predict_modes_shapes_and_errors(tiny):
    torch.manual_seed(5)
    x = torch.randn(1, 3, 25, 33)
    cfg = EvalConfig(resize=(40, 20), scales=(0.75, 1.0), crop_size=16)
    outs = {m: inf.predict(tiny, x, m, cfg, default_crop=64) for m in inf.MODES}
    assert all(o.shape == (1, 4, 25, 33) and torch.isfinite(o).all() for o in outs.values())
    assert not outs["whole"].requires_grad
    # Without resize, crop 0 and a default crop covering the image, slide is one padded pass.
    plain = EvalConfig(crop_size=0)
    slid = inf.predict(tiny, x, "slide", plain, default_crop=(25, 33))
    # exact: the same forward pass on the same pixels, then 0 + logits and a division by 1
    assert torch.equal(slid, inf.predict(tiny, x, "whole", plain, default_crop=64))
    with pytest.raises(DanetError, match="eval.modes"):
        inf.predict(tiny, x, "sliding", cfg, default_crop=64)
    with pytest.raises(DanetError, match="eval.stride_rate"):
        inf.predict(tiny, x, "slide", EvalConfig(stride_rate=1.5), default_crop=16)
