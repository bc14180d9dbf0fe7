"""Coordinate, triplet, SimAM, A²-Net, external and polarized attention: each against its
authors' own module (a known answer stored in tests/fixtures/known_answers/<name>.pt, computed
by running their code; its `source` string names the repository, commit, file and set-up) or,
for A²-Net, which has no official code, against the paper's equations written out here; plus
shapes at odd and 1x1 sizes, gradients, determinism and cost formulas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import variants
from danet.engine import cost

FIXTURES = Path(__file__).parent / "fixtures" / "known_answers"
KNOWN = ("coord", "triplet", "simam", "external", "psa_p", "psa_s")  # the authors' numbers
NAMES = (*KNOWN, "a2net")
# A known answer agrees to float64 round-off: the same operations, only grouped or ordered
# differently (a pooled map instead of a permuted copy, x * r / 6 against x * (r / 6)).
TOL = 1e-12


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def _theirs(name: str) -> tuple[torch.nn.Module, dict]:
    """Our module with the authors' weights loaded by their own parameter names, and the
    fixture."""
    known = _fixture(name)
    m = variants.create(name, known["input"].shape[1]).double()
    m.load_state_dict(known["state_dict"])  # strict: every name theirs, none missing
    return m, known


@pytest.mark.parametrize("name", KNOWN)
def test_known_answer_of_the_authors_code(name):
    """Output (eval and training mode), input gradient and the BN statistics after a training
    forward equal the authors' module's."""
    m, known = _theirs(name)
    assert "commit" in known["source"]
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(known["input"]), known["output_eval"], rtol=0, atol=TOL)
    x = known["input"].clone().requires_grad_()
    out = m.train()(x)
    (out * known["probe"]).sum().backward()
    torch.testing.assert_close(out.detach(), known["output"], rtol=0, atol=TOL)
    torch.testing.assert_close(x.grad, known["grad_input"], rtol=0, atol=TOL)
    after = dict(m.named_buffers())  # BN running statistics moved with the authors' momentum
    for key, value in known["buffers_after"].items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=TOL, msg=key)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 16, 1, 1), (2, 16, 1, 5), (2, 24, 7, 9), (1, 32, 13, 4)])
def test_shape_at_any_size(name, shape):
    torch.manual_seed(0)
    m = variants.create(name, shape[1])
    x = torch.relu(torch.randn(shape))
    for mode in (m.eval(), m.train()) if shape[0] * shape[2] * shape[3] > 1 else (m.eval(),):
        out = mode(x)
        assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    m = variants.create(name, 16).double()
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    x.requires_grad_()
    (m(x) * torch.randn_like(x)).sum().backward()
    assert x.grad.abs().min() > 0  # every input value moves the loss (simam has no parameters)
    for key, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name):
    x = torch.randn(2, 16, 7, 9)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        outs.append(variants.create(name, 16)(x))
    assert torch.equal(*outs)  # same seed, input and kernels in one process: bit for bit


def _macs(name: str, c: int, h: int, w: int) -> int:
    """The registry's cost formula of each variant, in integers."""
    n = h * w
    if name == "coord":
        return 2 * (h + w) * c * max(8, c // 32)
    if name == "triplet":  # three 7x7 convs, 2 -> 1 maps of C x W, H x C and H x W
        return 2 * 49 * (c * (h + w) + n)
    if name == "simam":  # element-wise only
        return 0
    if name == "external":  # two C x C convs, the S = 64 memory units in and out
        return 2 * n * c * c + 2 * n * c * 64
    if name == "a2net":  # convs C -> m, n, n and m -> C; two products of m x n per position
        q = c // 4
        return 2 * n * c * (q + q) + 2 * n * q * q
    half = c // 2
    # 1x1 convs C -> 1 and three C -> C/2, two products over positions, then conv_up
    shared = n * c + 3 * n * c * half + 2 * n * half
    if name == "psa_p":  # conv_up: C/2 -> C
        return shared + half * c
    if name == "psa_s":  # conv_up: C/2 -> C/8 -> C
        return shared + half * (half // 4) + (half // 4) * c
    raise KeyError(name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(1, 1), (6, 7), (12, 12)])
def test_cost_formula_is_what_fvcore_counts(name, size):
    m = variants.create(name, 64).eval()
    x = torch.randn(1, 64, *size)
    assert cost.count_macs(m, x) == _macs(name, 64, *size)
    assert cost.flopcounter_flops(m, x) == 2 * _macs(name, 64, *size)


def test_coord_is_timm_with_the_authors_widths():
    from timm.layers.coord_attn import CoordAttn

    m = variants.create("coord", 512)
    assert isinstance(m, CoordAttn) and m.conv1.out_channels == 16  # max(8, 512 // 32)
    assert variants.create("coord", 64).conv1.out_channels == 8  # the floor of 8
    assert variants.create("coord", 64, rd_channels=4).conv1.out_channels == 4
    assert m.conv1.bias is not None and isinstance(m.act, torch.nn.Hardswish)


def test_simam_is_the_energy_formula_and_finite_at_one_position():
    """Paper eq. 5-6 and the authors' code; at 1x1 their H W - 1 = 0 gives NaN, ours the
    variance 0 of a single value: x * sigmoid(1/2)."""
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    mu, var = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True)  # unbiased: / (N - 1)
    e_inv = (x - mu) ** 2 / (4 * (var + 1e-3)) + 0.5
    ours = variants.create("simam", 8, e_lambda=1e-3)
    torch.testing.assert_close(ours(x), x * torch.sigmoid(e_inv), rtol=0, atol=TOL)
    one = torch.randn(1, 8, 1, 1)
    assert torch.equal(ours(one), one * torch.sigmoid(torch.tensor(0.5)))
    assert list(ours.parameters()) == []


def test_external_starts_as_the_authors_init():
    """M_v = M_k transposed, conv and memory weights N(0, 2 / C), BN weight 1 (not the
    identity at init); M_k and M_v are two parameters (the paper's two memories)."""
    torch.manual_seed(0)
    m = variants.create("external", 256)
    assert torch.equal(m.linear_0.weight[:, :, 0], m.linear_1.weight[:, :, 0].T)
    assert m.linear_0.weight.data_ptr() != m.linear_1.weight.data_ptr()
    for w in (m.conv1.weight, m.conv2[0].weight, m.linear_1.weight):
        assert w.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.05)  # >= 16k samples
    assert torch.equal(m.conv2[1].weight, torch.ones(256))


def test_psa_follows_the_authors_code():
    """psa_p's spatial gate is the sigmoid of a softmax over positions (the authors' code; the
    paper's softmax is over channels), so it lies in (sigmoid(0), sigmoid(1)); psa_s needs a
    C/8-wide bottleneck."""
    from danet.errors import DanetError

    torch.manual_seed(0)
    gate = variants.create("psa_p", 16).spatial_gate(torch.randn(2, 16, 5, 7))
    assert gate.shape == (2, 1, 5, 7)
    assert gate.min() > 0.5 and gate.max() < torch.sigmoid(torch.tensor(1.0))
    with pytest.raises(DanetError, match="psa_s needs at least 8 channels"):
        variants.create("psa_s", 4)


def double_attention_paper(x, wa, ba, wb, bb, wv, bv, wo, bo):
    """A²-Nets (Chen et al., NeurIPS 2018), section 3, written out at float64 with explicit
    exponentials: A = phi(X), B = theta(X), V = rho(X) (1x1 convs);
    G = A softmax_positions(B)^T (eq. 3), z_i = G softmax_descriptors(v_i) (eq. 4),
    out = X + W_out Z + b_out."""
    b, c, h, w = x.shape
    X = x.reshape(b, c, h * w)
    A = torch.einsum("mc,bcp->bmp", wa, X) + ba[:, None]
    B = torch.einsum("nc,bcp->bnp", wb, X) + bb[:, None]
    V = torch.einsum("nc,bcp->bnp", wv, X) + bv[:, None]
    eb = torch.exp(B - B.amax(2, keepdim=True))
    attention_maps = eb / eb.sum(2, keepdim=True)  # each map sums to 1 over the positions
    ev = torch.exp(V - V.amax(1, keepdim=True))
    attention_vectors = ev / ev.sum(1, keepdim=True)  # each v_i sums to 1 over the n
    G = torch.einsum("bmp,bnp->bmn", A, attention_maps)  # g_j = sum_p A_p b_jp
    Z = torch.einsum("bmn,bnp->bmp", G, attention_vectors)  # z_i = sum_j v_ij g_j
    out = X + torch.einsum("cm,bmp->bcp", wo, Z) + bo[:, None]
    return out.reshape(b, c, h, w)


@pytest.mark.parametrize("shape", [(2, 16, 6, 7), (1, 12, 1, 1), (2, 20, 3, 11)])
def test_a2net_is_the_papers_equations(shape):
    """No official code exists (docs/model.md): the check is against the paper's equations,
    forward and input gradient, to float64 round-off (the same sums, grouped differently)."""
    torch.manual_seed(0)
    m = variants.create("a2net", shape[1]).double()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.5)
    convs = (m.conv_a, m.conv_b, m.conv_v, m.conv_out)
    weights = [t for conv in convs for t in (conv.weight[:, :, 0, 0].detach(), conv.bias.detach())]
    x1 = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    out, ref = m(x1), double_attention_paper(x2, *weights)
    torch.testing.assert_close(out, ref, rtol=0, atol=TOL)
    probe = torch.randn(shape, dtype=torch.float64)
    (out * probe).sum().backward()
    (ref * probe).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=TOL)


def test_a2net_gathers_before_distributing():
    """The gather-first order costs O(N m n): no N x N product (fvcore's count has none)."""
    m = variants.create("a2net", 64)
    counts = cost.fvcore_counts(m, (torch.randn(1, 64, 24, 24),))
    n = 24 * 24
    assert counts["by_operator"]["bmm"] == 2 * n * 16 * 16  # m = n = 64 / 4
    assert variants.create("a2net", 64, m_channels=8, n_channels=4).conv_v.out_channels == 4


def test_triplet_without_the_spatial_branch():
    """no_spatial (the authors' ablation): the mean of the (C, W) and (H, C) gated copies."""
    torch.manual_seed(0)
    m = variants.create("triplet", 16, no_spatial=True).eval()
    assert not any(key.startswith("hw.") for key in m.state_dict())
    x = torch.randn(2, 16, 5, 7)
    expected = (x * m.cw(x) + x * m.hc(x)) / 2
    torch.testing.assert_close(m(x), expected, rtol=1e-6, atol=1e-6)  # float32, reordered
