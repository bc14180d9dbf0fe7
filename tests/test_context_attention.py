"""ISA, DNL, GloRe, axial attention, Hamburger (NMF) and ANN's APNB in the shared slot, each
against its authors' code.

Known answers (tests/fixtures/known_answers/<variant>.pt): the authors' module, run outside this
repository on fixed float64 weights copied from ours and a seeded input, gave the stored output
and the input gradient of (out * loss_weight).sum(), in training mode (batch statistics) and in
evaluation mode. Each file's `source` names the repository, commit, file, the constructor call
and any stand-in used for an import that does not install.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import variants
from danet.engine import cost

FIXTURES = Path(__file__).parent / "fixtures" / "known_answers"
MODULES = ["isa", "dnl", "glore", "ann", "ham", "axial"]
# Parameters whose gradient is exactly zero in exact arithmetic, and why:
ZERO_GRAD = {
    # whitening subtracts each channel's mean over positions, which removes any bias; a
    # softmax over positions ignores the mask's bias
    "dnl": {"conv_query.bias", "conv_key.bias", "conv_mask.bias"},
    # a conv's bias just before a training-mode BN: the batch mean removes it; the value's and
    # W's biases add a constant per channel to the context (the attention weights sum to 1),
    # which passes linearly through the fuse conv to its training-mode BN: removed likewise
    "ann": {"f_key.0.bias", "fuse.0.bias", "f_value.bias", "W.bias"},
    # the similarity BN's shift adds one constant per head to a whole row of logits: the
    # softmax over that row removes it; the height pass's output shift reaches the width pass's
    # qkv BN through a linear conv only, and that training-mode BN's batch mean removes it
    "axial": {
        "height_block.bn_similarity.bias",
        "width_block.bn_similarity.bias",
        "height_block.bn_output.bias",
    },
}


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def _run(module: torch.nn.Module, x: torch.Tensor, weight: torch.Tensor, seed: int | None):
    x = x.clone().requires_grad_()
    if seed is not None:  # a module that draws random numbers in its forward
        torch.manual_seed(seed)
    out = module(x)
    (out * weight).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", MODULES)
def test_known_answer_of_the_authors_code(name, mode):
    """Output and input gradient equal the authors' at float64. Tolerance 1e-10 relative to
    the largest value: the same operations in another order (a scale before or after a
    product, einsum vs bmm) differ by a few units of 1e-16; any difference in what is computed
    shows at 1e-3 or more."""
    fx = _fixture(name)
    assert fx["variant"] == name and "commit" in fx["source"]
    x = fx["input"]
    module = variants.create(name, x.shape[1], **fx["options"]).double()
    module.load_state_dict(fx["state_dict"])
    module.train(mode == "train")
    out, grad = _run(module, x, fx["loss_weight"], fx.get("seed"))
    for got, want in ((out, fx[f"output_{mode}"]), (grad, fx[f"grad_input_{mode}"])):
        scale = want.abs().max().item()
        assert scale > 1e-3  # a real signal, not a vanishing one
        assert (got - want).abs().max().item() <= 1e-10 * max(scale, 1.0)


def test_fixtures_are_small_and_name_their_source():
    for name in MODULES:
        path = FIXTURES / f"{name}.pt"
        assert path.stat().st_size < 100_000
        assert "/" in _fixture(name)["source"].split()[0]  # owner/repository first


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("shape", [(1, 32, 1, 1), (2, 32, 1, 5), (2, 32, 7, 9), (1, 32, 17, 3)])
def test_shape_in_both_modes(name, shape):
    torch.manual_seed(0)
    module = variants.create(name, shape[1])
    x = torch.relu(torch.randn(shape))
    with torch.no_grad():
        for train in (True, False):
            if train and shape[0] * shape[2] * shape[3] == 1:
                continue  # training-mode BN needs two values per channel (as the head's own)
            assert module.train(train)(x).shape == shape


@pytest.mark.parametrize("name", MODULES)
def test_every_parameter_learns(name):
    """Every parameter gets a non-zero gradient, except those that provably cannot change the
    output (ZERO_GRAD), which get exactly zero."""
    torch.manual_seed(0)
    module = variants.create(name, 32).double().train()
    with torch.no_grad():
        for p in module.parameters():  # wake zero-initialised gammas, W and BN weights
            p.add_(0.2 * torch.randn_like(p))
    x = torch.relu(torch.randn(2, 32, 9, 10, dtype=torch.float64))
    module(x).sin().sum().backward()
    for pname, p in module.named_parameters():
        if pname in ZERO_GRAD.get(name, ()):
            assert p.grad.abs().max() < 1e-12, pname
        else:
            assert p.grad.abs().max() > 1e-8, pname


@pytest.mark.parametrize("name", MODULES)
def test_deterministic_under_a_seed(name):
    x = torch.relu(torch.randn(2, 32, 6, 11))
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        module = variants.create(name, 32).train()
        torch.manual_seed(4)
        outs.append(module(x))
    assert torch.equal(*outs)


def test_axial_relative_positions_follow_the_feature_map():
    """On axes no longer than the span the block is the authors' module sized to the map: a
    table of span 6 (11 offsets) and one of span 9 whose central 11 offsets are the same give
    equal outputs on a 6 x 5 input; an axis longer than the span still runs (clipped offsets)."""
    torch.manual_seed(0)
    big = variants.create("axial", 32, span=9).double().eval()
    small = variants.create("axial", 32, span=6).double().eval()
    state = big.state_dict()
    for key in ("height_block.relative", "width_block.relative"):
        state[key] = state[key][:, 3:14]
    small.load_state_dict(state)
    with torch.no_grad():
        for p in (big.bn2.weight, small.bn2.weight):
            p.fill_(1.0)  # wake the residual branch
        x = torch.relu(torch.randn(2, 32, 6, 5, dtype=torch.float64))
        assert (big(x) - small(x)).abs().max() < 1e-12
        assert small(torch.randn(1, 32, 13, 2, dtype=torch.float64)).shape == (1, 32, 13, 2)


def _padded(size: int, factor: int = 8) -> int:
    return -(-size // factor) * factor


# The registry's cost strings (multiply-adds) written out: n = H W, c = C, at the defaults
FORMULAS = {
    "isa": lambda n, c, h, w: (
        7 * (p := _padded(h) * _padded(w)) * c * c + 2 * n * c * c + 1.5 * p * c * (p / 64 + 64)
    ),
    "dnl": lambda n, c, h, w: 1.5 * n * n * c + 2 * n * c * c + 2 * n * c,
    "glore": lambda n, c, h, w: 1.5 * n * c * c + 3 * c**3 / 32,
    "ann": lambda n, c, h, w: 3.5 * n * c * c + 110 * n * c,
    "ham": lambda n, c, h, w: 17 * n * c * 64 + 15 * 64**2 * (n + c) + 2 * n * c * c,  # T = 7
    "axial": lambda n, c, h, w: 2 * n * c * c + 1.75 * n * c * (h + w),
}


@pytest.mark.parametrize("name", MODULES)
def test_cost_formula_is_what_both_counters_count(name):
    """fvcore (+ the project's handles) and FlopCounterMode (2 per multiply-add) both count
    exactly the registry's formula: every product of the module is seen by both."""
    c, h, w = 64, 12, 10
    module = variants.create(name, c).eval()  # eval: ham runs its 7 evaluation steps
    x = torch.relu(torch.randn(1, c, h, w))
    torch.manual_seed(0)
    macs = cost.count_macs(module, x)
    torch.manual_seed(0)
    flops = cost.flopcounter_flops(module, x)
    assert macs == flops / 2 == FORMULAS[name](h * w, c, h, w)
