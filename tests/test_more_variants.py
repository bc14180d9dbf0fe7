"""SAGAN, Non-local, CCNet and the timm wrappers (SE, CBAM, ECA, GC) in the shared slot."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from danet.errors import DanetError
from variants.ccnet import CrissCross
from variants.non_local import NonLocal
from variants.sagan import SelfAttention
from variants.timm_attention import CBAM, ECA, GC, SE

MODULES = {
    "sagan": SelfAttention,
    "sagan_nopool": partial(SelfAttention, pool=False),
    "nonlocal": NonLocal,
    "nonlocal_dot": partial(NonLocal, mode="dot_product"),
    "ccnet": CrissCross,
    "se": SE,
    "cbam": CBAM,
    "eca": ECA,
    "gc": GC,
    "gc_scale": partial(GC, fuse_scale=True),
}
# identity at init: gamma = 0 (sagan, ccnet), zero BN (non-local), zero last conv (gc, add fusion)
IDENTITY_AT_INIT = ("sagan", "sagan_nopool", "nonlocal", "nonlocal_dot", "ccnet", "gc")
WITH_BN = ("nonlocal", "nonlocal_dot", "cbam")
SMALL = [(1, 64, 1, 1), (2, 64, 7, 9)]


def _build(name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    m = MODULES[name](shape[1])
    b, _, h, w = shape
    if name in WITH_BN and b * h * w == 1:
        m.eval()  # training-mode BN cannot normalise one value per channel (documented limit)
    return m


def _wake(m: torch.nn.Module) -> None:
    """Give every all-zero parameter (gamma, zero-init BN, GC's last conv) a non-zero value."""
    with torch.no_grad():
        for p in m.parameters():
            if not p.any():
                p.normal_(0.0, 0.5)


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("shape", [*SMALL, (1, 512, 33, 33)])
def test_shape(name, shape):
    torch.manual_seed(0)
    m = _build(name, shape)
    _wake(m)
    with torch.no_grad():
        assert m(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("name", WITH_BN)
def test_bn_modules_need_two_values_per_channel_in_training(name):
    m = MODULES[name](64)
    m(torch.randn(2, 64, 1, 1))  # two samples are enough
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(torch.randn(1, 64, 1, 1))


@pytest.mark.parametrize("name", IDENTITY_AT_INIT)
@pytest.mark.parametrize("shape", SMALL)
def test_identity_at_init(name, shape):
    torch.manual_seed(0)
    m = _build(name, shape)
    x = torch.randn(shape)
    assert torch.equal(m(x), x)  # exact: x + a branch that is exactly 0, whatever the kernels


def _zero_grad_expected(name: str, one_position: bool) -> set[str]:
    """Parameters whose gradient is exactly zero in exact arithmetic, and why."""
    # A key-side bias adds q_i . b to every energy of query i (GC: b to every position), a
    # constant that the softmax over keys removes: no gradient at any size.
    always = {"nonlocal": {"phi.bias"}, "ccnet": {"key_conv.bias"}, "gc": {"conv_attn.bias"}}
    # With a single key the softmax is the constant 1, so the query/key side gets no gradient.
    # (Non-local dot_product divides by N instead of a softmax, so it still learns at 1x1.)
    single = {
        "sagan": {"query_conv.weight", "key_conv.weight"},
        "sagan_nopool": {"query_conv.weight", "key_conv.weight"},
        "nonlocal": {"theta.weight", "theta.bias", "phi.weight"},
        "ccnet": {"query_conv.weight", "query_conv.bias", "key_conv.weight"},
        "gc": {"conv_attn.weight"},
        "gc_scale": {"conv_attn.weight"},
    }
    zero = set(always.get(name.removesuffix("_scale"), set()))
    return zero | (single.get(name, set()) if one_position else set())


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("shape", SMALL)
def test_gradients_reach_every_parameter(name, shape):
    torch.manual_seed(0)
    m = _build(name, shape).double()
    _wake(m)
    x = torch.randn(shape, dtype=torch.float64)
    (m(x) * torch.randn(shape, dtype=torch.float64)).sum().backward()
    grads = dict(m.named_parameters())
    assert all(p.grad is not None for p in grads.values())
    scale = max(p.grad.abs().max() for p in grads.values())
    zero = _zero_grad_expected(name, shape[2] * shape[3] == 1)
    for key, p in grads.items():
        if key in zero:
            assert p.grad.abs().max() <= 1e-10 * scale, key
        else:
            assert p.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", sorted(MODULES))
def test_deterministic_under_seed(name):
    x = torch.randn(2, 64, 7, 9)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = MODULES[name](64)
        _wake(m)
        outs.append(m(x))
    assert torch.equal(outs[0], outs[1])  # exact: same weights, input and kernels, one process
    assert torch.equal(m(x), outs[1])  # and a second call of the same module


def _conv1x1(conv, X):  # X: B x C x N
    out = torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], X)
    return out if conv.bias is None else out + conv.bias[:, None]


def criss_cross_reference(m: CrissCross, x: torch.Tensor) -> torch.Tensor:
    """One step as a dense N x N attention restricted to each position's row and column."""
    b, c, h, w = x.shape
    X = x.reshape(b, c, h * w)
    Q, K, V = (_conv1x1(conv, X) for conv in (m.query_conv, m.key_conv, m.value_conv))
    row, col = torch.arange(h * w) // w, torch.arange(h * w) % w
    cross = (row[:, None] == row[None, :]) | (col[:, None] == col[None, :])  # self counted once
    assert (cross.sum(1) == h + w - 1).all()
    energy = (Q.transpose(1, 2) @ K).masked_fill(~cross, float("-inf"))  # N x N
    A = torch.softmax(energy, dim=-1)
    return m.gamma * (V @ A.transpose(1, 2)).reshape(b, c, h, w) + x


@pytest.mark.parametrize("recurrence", [1, 2])
def test_criss_cross_equals_dense_masked_reference(recurrence):
    torch.manual_seed(0)
    m = CrissCross(16, recurrence=recurrence).double()
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    ref = x
    for _ in range(recurrence):  # shared weights: the same step applied again
        ref = criss_cross_reference(m, ref)
    assert (m(x) - ref).abs().max() <= 1e-10


def non_local_reference(m: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """z = BN(W y) + x with y_i = sum_j f(x_i, x_j) g(x_j) / C(x), BN in eval mode."""
    b, c, h, w = x.shape
    X = x.reshape(b, c, h * w)
    theta, phi, g = (_conv1x1(conv, X) for conv in (m.theta, m.phi, m.g))
    f = torch.einsum("bci,bcj->bij", theta, phi)
    f = torch.softmax(f, -1) if m.mode == "embedded_gaussian" else f / (h * w)
    y = torch.einsum("bij,bcj->bci", f, g)
    Wy = _conv1x1(m.W, y)
    bn = m.bn
    mean, var = bn.running_mean[:, None], bn.running_var[:, None]
    z = (Wy - mean) / torch.sqrt(var + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
    return z.reshape(b, c, h, w) + x


@pytest.mark.parametrize("mode", ["dot_product", "embedded_gaussian"])
def test_non_local_equals_formula(mode):
    torch.manual_seed(0)
    m = NonLocal(16, mode=mode).double().eval()
    with torch.no_grad():
        for t in (m.bn.weight, m.bn.bias, m.bn.running_mean):
            t.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    assert (m(x) - non_local_reference(m, x)).abs().max() <= 1e-10


def test_sagan_pools_keys_with_ceil_mode():
    torch.manual_seed(0)
    m = SelfAttention(16).double()
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    X = x.reshape(2, 16, -1)
    q = _conv1x1(m.query_conv, X)
    k = F.max_pool2d(m.key_conv(x), 2, 2, ceil_mode=True).flatten(2)  # 4 x 5 = 20 keys
    v = F.max_pool2d(m.value_conv(x), 2, 2, ceil_mode=True).flatten(2)
    assert k.shape[-1] == 20
    A = torch.softmax(q.transpose(1, 2) @ k, -1)  # no scaling
    ref = m.out_conv((v @ A.transpose(1, 2)).reshape(2, 8, 7, 9)) + x
    assert (m(x) - ref).abs().max() <= 1e-10


def test_timm_widths_and_kernel_sizes():
    # timm's rounding, as documented in variants/timm_attention.py
    assert [SE(c).fc1.out_channels for c in (64, 512)] == [8, 32]
    assert [CBAM(c).channel.fc1.out_channels for c in (64, 512)] == [4, 32]
    assert [GC(c).mlp_add.fc1.out_channels for c in (64, 512)] == [8, 64]
    assert [ECA(c).conv.kernel_size[0] for c in (64, 512)] == [3, 5]
    assert ECA(512, kernel_size=9).conv.kernel_size[0] == 9  # a fixed k is honoured
    assert SE(64, rd_channels=4).fc1.out_channels == 4


def test_option_errors():
    with pytest.raises(
        DanetError, match=r"unknown nonlocal mode 'dot'; valid: dot_product, embedded_gaussian"
    ):
        NonLocal(16, mode="dot")
    with pytest.raises(DanetError, match=r"unknown act_layer 'rellu' \(did you mean 'relu'\?\)"):
        SE(16, act_layer="rellu")
    with pytest.raises(DanetError, match="kernel_size must be a positive odd integer"):
        ECA(16, kernel_size=4)
    with pytest.raises(DanetError, match="spatial_kernel_size must be a positive odd integer"):
        CBAM(16, spatial_kernel_size=6)
    with pytest.raises(DanetError, match="use_mlp=True needs kernel_size=None"):
        ECA(16, kernel_size=3, use_mlp=True)
    with pytest.raises(DanetError, match="at least one of fuse_add, fuse_scale"):
        GC(16, fuse_add=False)
    with pytest.raises(DanetError, match="recurrence must be >= 1"):
        CrissCross(16, recurrence=0)
