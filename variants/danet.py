"""DANet's position (PAM) and channel (CAM) attention, Fu et al., CVPR 2019.

Paper: https://arxiv.org/abs/1809.02983. Semantics follow the official code at tag v0.5.0
(REFERENCE.md section 1), with its parameter names so released checkpoints load:
PAM has `query_conv`, `key_conv`, `value_conv` and `gamma`; CAM has only `gamma`.

Caveat: the official CAM applies softmax to rowmax(energy) - energy, i.e. softmax(-energy),
which weights *dissimilar* channels most; the paper's text says softmax(energy). Both are
offered (`form="official"` is the default, as it produced the published numbers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from danet.errors import unknown_choice

CAM_FORMS = ("official", "paper")
PAM_IMPLS = ("naive", "efficient", "auto")
CHUNK_ELEMENTS = 2**20  # attention entries per chunk (4 MiB in fp32) for the CPU path


def attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """out[b, :, i] = sum_j softmax_j(q_i . k_j) v[b, :, j]; q: B x N x d, k: B x d x N,
    v: B x C x N. The B x N x N attention map is materialised (DANet's official form)."""
    attention = torch.softmax(torch.bmm(q, k), dim=-1)
    return torch.bmm(v, attention.transpose(1, 2))


class _ChunkedAttention(torch.autograd.Function):
    """The same numbers as attention_naive with memory linear in N: queries go in chunks, the
    forward keeps each row's log-sum-exp, and the backward recomputes one chunk of the
    softmax at a time from it (flash-attention style). No library op does this on the CPU:
    its SDPA kernels need equal query and value widths (REFERENCE.md section 4)."""

    @staticmethod
    def forward(ctx, q, k, v, chunk: int):
        b, n, _ = q.shape
        out = v.new_empty(v.shape)
        lse = q.new_empty(b, n)
        for s in range(0, n, chunk):
            energy = torch.bmm(q[:, s : s + chunk], k)  # B x m x N
            lse[:, s : s + chunk] = torch.logsumexp(energy, dim=-1)
            p = torch.exp(energy.sub_(lse[:, s : s + chunk, None]))
            out[:, :, s : s + chunk] = torch.bmm(v, p.transpose(1, 2))
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        rowdot = (grad_out * out).sum(1)  # B x N: sum_j p_ij dp_ij = dout_i . out_i
        for s in range(0, q.shape[1], ctx.chunk):
            e = s + ctx.chunk
            p = torch.exp(torch.bmm(q[:, s:e], k).sub_(lse[:, s:e, None]))  # B x m x N
            g = grad_out[:, :, s:e]  # B x C x m
            dv.baddbmm_(g, p)
            dp = torch.bmm(g.transpose(1, 2), v)  # B x m x N
            ds = p.mul_(dp.sub_(rowdot[:, s:e, None]))  # softmax backward, in place
            dq[:, s:e] = torch.bmm(ds, k.transpose(1, 2))
            dk.baddbmm_(q[:, s:e].transpose(1, 2), ds)
        return dq, dk, dv, None


def attention_efficient(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """attention_naive's numbers with peak memory linear in N, forward and backward."""
    if q.is_cuda:
        # CUDA's memory-efficient SDPA kernel takes a value width different from q/k's.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            out = F.scaled_dot_product_attention(
                q[:, None], k.transpose(1, 2)[:, None], v.transpose(1, 2)[:, None], scale=1.0
            )
        return out[:, 0].transpose(1, 2)
    chunk = max(1, CHUNK_ELEMENTS // max(q.shape[1], 1))
    return _ChunkedAttention.apply(q, k, v, chunk)


class PAM(nn.Module):
    """Position attention: every position aggregates the values of all positions, weighted by
    softmax over keys of the (unscaled) query-key dot product; E = gamma * out + x."""

    def __init__(self, channels: int, reduction: int = 8, impl: str = "auto") -> None:
        super().__init__()
        if impl not in PAM_IMPLS:
            raise unknown_choice("pam impl", impl, PAM_IMPLS)
        self.impl = impl
        qk = max(channels // reduction, 1)
        self.query_conv = nn.Conv2d(channels, qk, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, qk, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.query_conv(x).flatten(2).transpose(1, 2)  # B x N x C'
        key = self.key_conv(x).flatten(2)  # B x C' x N
        value = self.value_conv(x).flatten(2)  # B x C x N
        out = self._attend(query, key, value).view(b, c, h, w)
        return self.gamma * out + x

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n = q.shape[1]
        # auto: the naive map is faster while it is small; both are exact
        small = n * n <= CHUNK_ELEMENTS
        if self.impl == "naive" or (self.impl == "auto" and small):
            return attention_naive(q, k, v)
        return attention_efficient(q, k, v)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"


class CAM(nn.Module):
    """Channel attention: no convolutions; channel affinity from X X^T over positions."""

    def __init__(self, channels: int, form: str = "official") -> None:
        super().__init__()
        if form not in CAM_FORMS:
            raise unknown_choice("cam form", form, CAM_FORMS)
        self.form = form
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.flatten(2)  # B x C x N
        energy = torch.bmm(flat, flat.transpose(1, 2))  # B x C x C
        if self.form == "official":
            energy = energy.amax(dim=-1, keepdim=True) - energy
        attention = torch.softmax(energy, dim=-1)
        out = torch.bmm(attention, flat).view(b, c, h, w)
        return self.gamma * out + x

    def extra_repr(self) -> str:
        return f"form={self.form!r}"


class DualAttention(nn.Module):
    """PAM and CAM in parallel, summed: the head-free form of DANet's dual module.

    Inside the DANet head each branch has its own convolutions before and after the
    attention (see danet.models.head), so the head places `sa` and `sc` itself; this
    module is the drop-in form for any other (B, C, H, W) slot.
    """

    def __init__(
        self, channels: int, reduction: int = 8, impl: str = "auto", form: str = "official"
    ) -> None:
        super().__init__()
        self.sa = PAM(channels, reduction=reduction, impl=impl)
        self.sc = CAM(channels, form=form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sa(x) + self.sc(x)
