"""Unscaled dot-product attention, softmax(Q Kᵀ) V, in two exact forms: the naive one that
builds the N x M map, and a memory-efficient one whose memory is linear in N (DANet's PAM,
SAGAN and Non-local share it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

IMPLS = ("naive", "efficient", "auto")
CHUNK_ELEMENTS = 2**20  # attention entries per chunk (4 MiB in fp32) for the CPU path


def attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """out[b, :, i] = sum_j softmax_j(q_i . k_j) v[b, :, j]; q: B x N x d, k: B x d x M,
    v: B x C x M (M keys, N queries). The B x N x M map is materialised (the official form)."""
    attention = torch.softmax(torch.bmm(q, k), dim=-1)
    return torch.bmm(v, attention.transpose(1, 2))


class _ChunkedAttention(torch.autograd.Function):
    """The same numbers as attention_naive with memory linear in N: queries go in chunks and
    the backward recomputes one chunk of the softmax at a time (flash-attention style; the
    recomputed chunk is bit-identical to the forward's). No library op does this on the CPU:
    its SDPA kernels need equal query and value widths (torch 2.14.1; docs/reference.md,
    section 4)."""

    @staticmethod
    def forward(ctx, q, k, v, chunk: int):
        b, n, _ = q.shape
        out = v.new_empty(b, v.shape[1], n)
        for s in range(0, n, chunk):
            p = torch.softmax(torch.bmm(q[:, s : s + chunk], k), dim=-1)  # B x m x N
            out[:, :, s : s + chunk] = torch.bmm(v, p.transpose(1, 2))
        ctx.save_for_backward(q, k, v, out)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        rowdot = (grad_out * out).sum(1)  # B x N: sum_j p_ij dp_ij = dout_i . out_i
        for s in range(0, q.shape[1], ctx.chunk):
            e = s + ctx.chunk
            p = torch.softmax(torch.bmm(q[:, s:e], k), dim=-1)  # B x m x N
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
    chunk = max(1, CHUNK_ELEMENTS // max(k.shape[2], 1))
    return _ChunkedAttention.apply(q, k, v, chunk)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Dispatch on impl; auto takes the naive map while it is small (both are exact)."""
    if impl == "naive" or (impl == "auto" and q.shape[1] * k.shape[2] <= CHUNK_ELEMENTS):
        return attention_naive(q, k, v)
    return attention_efficient(q, k, v)
