"""PAM and CAM against a direct float64 transcription of the official code (DANet tag v0.5.0,
encoding/nn/attention.py; docs/reference.md, section 1)."""

import pytest
import torch

import variants
from danet.errors import DanetError


def pam_reference(x, wq, bq, wk, bk, wv, bv, gamma):
    b, c, h, w = x.shape
    X = x.reshape(b, c, h * w)  # C x N
    Q = torch.einsum("oc,bcn->bon", wq, X) + bq[:, None]
    K = torch.einsum("oc,bcn->bon", wk, X) + bk[:, None]
    V = torch.einsum("oc,bcn->bon", wv, X) + bv[:, None]
    energy = Q.transpose(1, 2) @ K  # N x N: energy[i, j] = q_i . k_j, no 1/sqrt(d)
    S = torch.exp(energy - energy.max(-1, keepdim=True).values)
    S = S / S.sum(-1, keepdim=True)  # softmax over keys j
    out = torch.einsum("bcj,bij->bci", V, S)  # E_i = sum_j s_ij V_j
    return gamma * out.reshape(b, c, h, w) + x


def cam_reference(x, gamma, form):
    b, c, h, w = x.shape
    X = x.reshape(b, c, h * w)
    energy = X @ X.transpose(1, 2)  # C x C
    if form == "official":
        energy = energy.max(-1, keepdim=True).values - energy
    A = torch.exp(energy - energy.max(-1, keepdim=True).values)
    A = A / A.sum(-1, keepdim=True)
    return gamma * (A @ X).reshape(b, c, h, w) + x


def _inputs(shape=(2, 16, 5, 7)):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("impl", ["naive", "efficient", "auto"])
def test_pam_equals_formula_forward_and_backward(impl, monkeypatch):
    import variants.attention_ops

    monkeypatch.setattr(
        variants.attention_ops, "CHUNK_ELEMENTS", 64
    )  # 35 positions: 2 rows a chunk
    torch.manual_seed(0)
    pam = variants.create("pam", 16, impl=impl).double()
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    x1 = _inputs().requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    params = [
        pam.query_conv.weight[:, :, 0, 0],
        pam.query_conv.bias,
        pam.key_conv.weight[:, :, 0, 0],
        pam.key_conv.bias,
        pam.value_conv.weight[:, :, 0, 0],
        pam.value_conv.bias,
    ]
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    gamma = pam.gamma.detach().clone().requires_grad_()
    out, ref = pam(x1), pam_reference(x2, *ref_params, gamma)
    assert (out - ref).abs().max() <= 1e-10
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    assert (x1.grad - x2.grad).abs().max() <= 1e-10
    assert (pam.gamma.grad - gamma.grad).abs().max() <= 1e-10
    for mod, rp in (
        (pam.query_conv, ref_params[0]),
        (pam.key_conv, ref_params[2]),
        (pam.value_conv, ref_params[4]),
    ):
        assert (mod.weight.grad[:, :, 0, 0] - rp.grad).abs().max() <= 1e-10


@pytest.mark.parametrize("form", ["official", "paper"])
def test_cam_equals_formula_forward_and_backward(form):
    cam = variants.create("cam", 16, form=form).double()
    with torch.no_grad():
        cam.gamma.fill_(-0.4)
    x1 = (0.3 * _inputs()).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    gamma = cam.gamma.detach().clone().requires_grad_()
    out, ref = cam(x1), cam_reference(x2, gamma, form)
    assert (out - ref).abs().max() <= 1e-10
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    assert (x1.grad - x2.grad).abs().max() <= 1e-10
    assert (cam.gamma.grad - gamma.grad).abs().max() <= 1e-10


def test_efficient_pam_memory_grows_linearly():
    """Peak tensor memory of forward + backward from N = 32^2 to 64^2 (4x N): the naive map
    grows with N^2, the efficient path with N."""
    from analysis.bench_attention import measure

    naive = [measure("pam", 64, s, repeats=0, impl="naive")["peak_mb"] for s in (32, 64)]
    eff = [measure("pam", 64, s, repeats=0, impl="efficient")["peak_mb"] for s in (32, 64)]
    assert naive[1] / naive[0] > 10
    assert eff[1] / eff[0] < 4.5
    assert eff[1] < 0.25 * naive[1]


def test_official_cam_differs_from_paper_form():
    x = _inputs()
    official, paper = variants.create("cam", 16), variants.create("cam", 16, form="paper")
    for m in (official, paper):
        m.double()
        with torch.no_grad():
            m.gamma.fill_(1.0)
    assert (official(x) - paper(x)).abs().max() > 1e-3


# Residual modules whose residual branch starts at zero (gamma or a zero-initialised last BN)
IDENTITY_AT_INIT = {
    "none", "pam", "cam", "sagan", "nonlocal", "ccnet", "gc", "ema", "glore", "axial"
}


@pytest.mark.parametrize("name", variants.available())
def test_every_variant_fits_the_slot(name):
    """(B, C, H, W) -> (B, C, H, W) at the sizes the head meets, deterministic under a seed,
    the identity at initialisation where its residual branch starts at zero, and gradients
    reach every parameter."""
    for shape in [(1, 64, 1, 1), (2, 64, 7, 9), (2, 512, 33, 33)]:
        torch.manual_seed(0)
        m = variants.create(name, shape[1]).eval()  # eval: BN cannot train on one value
        x = torch.relu(torch.randn(shape))  # the slot's input follows conv5a's ReLU
        with torch.no_grad():
            torch.manual_seed(1)  # a forward may draw random numbers (ham's initial bases)
            out = m(x)
            torch.manual_seed(0)
            again = variants.create(name, shape[1]).eval()
            torch.manual_seed(1)
            again = again(x)
        assert out.shape == x.shape
        assert torch.equal(out, again)  # exact: same weights, input and kernels, one process
        if name in IDENTITY_AT_INIT:
            assert torch.allclose(out, x)
        elif name == "danet":  # two branches, each the identity
            assert torch.allclose(out, 2 * x)
    m = variants.create(name, 64).train()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.relu(torch.randn(2, 64, 7, 9)).requires_grad_()  # `none` has no parameters
    m(x).square().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in m.parameters())


def test_official_parameter_names():
    assert set(variants.create("pam", 64).state_dict()) == {
        "query_conv.weight",
        "query_conv.bias",
        "key_conv.weight",
        "key_conv.bias",
        "value_conv.weight",
        "value_conv.bias",
        "gamma",
    }
    assert set(variants.create("cam", 64).state_dict()) == {"gamma"}


def test_unknown_variant_and_option_errors():
    with pytest.raises(
        DanetError,
        match=r"unknown variant 'pamm' \(did you mean 'pam'\?\); valid: (\w+, )*cam, cbam, ccnet,",
    ):
        variants.create("pamm", 8)
    with pytest.raises(
        DanetError,
        match=r"unknown option 'reductio' for variant 'pam' \(did you mean 'reduction'\?\); "
        r"valid options: impl, reduction",
    ):
        variants.create("pam", 8, reductio=4)
    with pytest.raises(
        DanetError, match=r"unknown cam form 'oficial' \(did you mean 'official'\?\)"
    ):
        variants.create("cam", 8, form="oficial")
    with pytest.raises(
        DanetError,
        match=r"unknown option 'size' for variant 'danet'; valid options: form, impl, reduction",
    ):
        variants.branch_options("danet", {"size": 3})


@pytest.mark.parametrize(
    "name, opts",
    [
        ("sagan", {}),
        ("sagan", {"pool": False}),
        ("nonlocal", {}),
        ("nonlocal", {"mode": "dot_product"}),
    ],
)
def test_efficient_impl_matches_naive(name, opts, monkeypatch):
    """The other N x N modules take the same exact memory-efficient path as PAM."""
    import variants.attention_ops

    monkeypatch.setattr(variants.attention_ops, "CHUNK_ELEMENTS", 64)
    outs, grads = [], []
    for impl in ("naive", "efficient"):
        torch.manual_seed(0)
        m = variants.create(name, 16, impl=impl, **opts).double()
        for p in m.parameters():  # leave the zero-initialised residual branch
            torch.nn.init.normal_(p, std=0.3)
        x = _inputs().requires_grad_()
        out = m(x)
        out.backward(torch.ones_like(out))
        outs.append(out)
        grads.append([x.grad] + [p.grad for p in m.parameters()])
    assert (outs[0] - outs[1]).abs().max() <= 1e-10
    assert all((a - b).abs().max() <= 1e-10 for a, b in zip(*grads))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_efficient_pam_on_cuda_matches_naive():
    """On CUDA the efficient path is SDPA's memory-efficient kernel (value width != q/k)."""
    outs, grads = [], []
    for impl in ("naive", "efficient"):
        torch.manual_seed(0)
        m = variants.create("pam", 64, impl=impl).cuda()
        torch.nn.init.constant_(m.gamma, 1.0)
        x = torch.randn(2, 64, 30, 31, device="cuda", requires_grad=True)
        out = m(x)
        out.square().mean().backward()
        outs.append(out)
        grads.append(x.grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-3)
