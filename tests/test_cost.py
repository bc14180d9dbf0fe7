"""Every run's measured cost (result.json `cost`, danet.engine.cost): present for every
registered variant with the default `tiny` backbone, consistent with itself, shared by the
seeds of one variant, and its memory counted at the tensor level."""

from __future__ import annotations

import json

import pytest
import torch

import variants
from danet.engine import cost
from danet.engine.train import run

FIELDS = ("params", "params_head", "params_attention", "gmacs", "gmacs_head",
          "gmacs_attention", "gflops_flopcounter", "train_peak_mb", "attention_peak_mb",
          "latency_ms", "images_per_s")


@pytest.mark.parametrize("variant", variants.available())
def test_every_variant_records_its_cost(tiny_cfg, tmp_path, variant):
    cfg = tiny_cfg(f"model.variant={variant}", "train.iterations=1", "data.val_size=1")
    result = run(cfg, tmp_path / "r", progress=False)
    spent = json.loads((tmp_path / "r" / "result.json").read_text())["cost"]
    assert spent == result["cost"] and not spent["cached"]
    assert all(spent[k] >= 0 for k in FIELDS), spent
    assert spent["eval_input"] == [1, 3, 64, 64] and spent["train_input"] == [2, 3, 64, 64]
    assert spent["params"] == result["params"]
    assert spent["params"] > spent["params_head"] >= spent["params_attention"]
    assert spent["gmacs"] > spent["gmacs_head"] >= spent["gmacs_attention"]
    # fvcore (+ handles) and FlopCounterMode count the same products: 2 FLOPs per MAC
    assert spent["gflops_flopcounter"] == pytest.approx(2 * spent["gmacs"], rel=0.005)
    assert spent["train_peak_mb"] > spent["train_peak_without_attention_mb"] > 0 or (
        variant == "none" and spent["attention_peak_mb"] == 0
    )
    # none: nothing to remove, the same model measured twice; simam: parameter-free and
    # element-wise only, no products to count
    if variant in ("none", "simam"):
        assert spent["params_attention"] == spent["gmacs_attention"] == 0
    else:
        assert spent["gmacs_attention"] > 0


def test_seeds_of_a_variant_share_one_measurement(tiny_cfg, tmp_path):
    first = run(tiny_cfg("model.variant=pam", "train.iterations=1"), tmp_path / "s0")
    second = run(tiny_cfg("model.variant=pam", "train.iterations=1", "seed=1"), tmp_path / "s1")
    other = run(tiny_cfg("model.variant=cam", "train.iterations=1"), tmp_path / "c0")
    assert not first["cost"]["cached"] and second["cost"]["cached"]
    assert {k: v for k, v in second["cost"].items() if k != "cached"} == {
        k: v for k, v in first["cost"].items() if k != "cached"
    }
    assert not other["cost"]["cached"] and other["cost"]["key"] != first["cost"]["key"]
    assert len(list((tmp_path / ".cost").glob("*.json"))) == 2
    # another class count is another classifier: measured anew, not shared
    cfg = tiny_cfg("model.variant=pam", "train.iterations=1")
    assert cost.measure_key(cfg, 8, [(1, 3, 64, 64)], torch.device("cpu")) != cost.measure_key(
        cfg, 11, [(1, 3, 64, 64)], torch.device("cpu")
    )


def test_memory_is_the_tensors_of_one_step_not_the_process():
    """A linear layer's training step: the peak is weight + its gradient + momentum + input,
    to within the few scalars of the loss (the output is freed once summed: a linear layer's
    backward needs its input only). A process measure (RSS) would be hundreds of MB."""
    layer = torch.nn.Linear(256, 512, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(64, 256)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        opt.step()

    step()  # momentum buffers exist from here on, as after a run's first step
    weight, inp = 4 * 256 * 512, 4 * 64 * 256
    total, method = cost.peak_memory_mb(step, torch.device("cpu"), layer, opt, x)
    assert method.startswith("MemTracker")
    assert total * 2**20 == pytest.approx(3 * weight + inp, abs=1024)
    # beyond the weight, the momentum and the input: the gradient
    beyond, _ = cost.peak_memory_mb(step, torch.device("cpu"), layer, opt, x, beyond=True)
    assert beyond * 2**20 == pytest.approx(weight, abs=1024)


def test_cost_is_counted_at_the_input_evaluation_sees():
    """eval.resize rescales before the forward: the cost is that forward's, not the file's."""
    from danet import config as C

    image = (torch.zeros(3, 360, 480), torch.zeros(360, 480))
    cfg = C.build(None, ["eval.resize=[240,180]"])
    assert cost.eval_input(cfg, [image]) == (1, 3, 180, 240)
    assert cost.eval_input(C.Config(), [image]) == (1, 3, 360, 480)
    slide = C.build(None, ["eval.modes=[slide]", "data.crop_size=[128,256]"])
    assert cost.eval_input(slide, [image]) == (1, 3, 128, 256)
