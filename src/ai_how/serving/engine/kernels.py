"""Fused Triton kernels for the decode step (CUDA only): fewer, larger kernels per layer.

Inside a CUDA graph a decode step costs roughly a few microseconds per kernel, and the eager
PyTorch ops of one layer are ~35 kernels (RMSNorm alone is seven). These fuse:

- ``add_rms``: residual add + RMSNorm (HF's rounding: normalise in float32, round, scale by weight);
- ``rope_store``: rotary on q and k from the fused qkv projection, k and v written into the flat
  KV cache at ``slot + position``; returns the rotated q;
- ``silu_mul``: SwiGLU's ``silu(gate) * up`` from the fused gate/up projection.

Each has a PyTorch twin in ``model.Decoder`` (used on CPU, and as the reference in the GPU check).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor


@functools.cache
def available() -> bool:
    try:
        import triton  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def _kernels() -> Any:
    import triton  # type: ignore[import-not-found,unused-ignore]
    import triton.language as tl  # type: ignore[import-not-found,unused-ignore]

    @triton.jit  # type: ignore[misc]
    def add_rms(  # type: ignore[no-untyped-def]
        X, R, W, OUT_H, n, eps, HAS_R: tl.constexpr, BLOCK: tl.constexpr
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(X + row * n + cols, mask=mask, other=0.0)
        if HAS_R:
            r = tl.load(R + row * n + cols, mask=mask, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)
            tl.store(X + row * n + cols, x, mask=mask)
        x32 = x.to(tl.float32)
        var = tl.sum(x32 * x32, 0) / n
        h = (x32 * tl.rsqrt(var + eps)).to(OUT_H.dtype.element_ty)
        w = tl.load(W + cols, mask=mask, other=0.0)
        h = (h.to(tl.float32) * w.to(tl.float32)).to(OUT_H.dtype.element_ty)
        tl.store(OUT_H + row * n + cols, h, mask=mask)

    @triton.jit  # type: ignore[misc]
    def rope_store(  # type: ignore[no-untyped-def]
        QKV,
        COS,
        SIN,
        POS,
        SLOTS,
        Q_OUT,
        K_CACHE,
        V_CACHE,
        stride_qkv,
        HQ: tl.constexpr,
        HKV: tl.constexpr,
        HALF: tl.constexpr,
        HEADS_PAD: tl.constexpr,
    ):
        # One program per row, every head of it as one [HEADS_PAD, HALF] tile: one program per
        # (row, head) meant 15 one-warp programs per token, ~11 us per layer at 1,024 rows on an
        # H100 (as long as the step's largest matmul).
        b = tl.program_id(0).to(tl.int64)
        pos = tl.load(POS + b).to(tl.int64)
        row = tl.load(SLOTS + b).to(tl.int64) + pos
        h = tl.arange(0, HEADS_PAD)[:, None]
        d = tl.arange(0, HALF)[None, :]
        real = h < HQ + 2 * HKV
        src = QKV + b * stride_qkv + h * (2 * HALF)
        x1 = tl.load(src + d, mask=real, other=0.0)
        x2 = tl.load(src + HALF + d, mask=real, other=0.0)
        c1 = tl.load(COS + pos * (2 * HALF) + d).to(tl.float32)
        c2 = tl.load(COS + pos * (2 * HALF) + HALF + d).to(tl.float32)
        s1 = tl.load(SIN + pos * (2 * HALF) + d).to(tl.float32)
        s2 = tl.load(SIN + pos * (2 * HALF) + HALF + d).to(tl.float32)
        is_v = h >= HQ + HKV  # values are stored as they are; queries and keys rotated
        o1 = tl.where(is_v, x1.to(tl.float32), x1.to(tl.float32) * c1 - x2.to(tl.float32) * s1).to(x1.dtype)
        o2 = tl.where(is_v, x2.to(tl.float32), x2.to(tl.float32) * c2 + x1.to(tl.float32) * s2).to(x1.dtype)
        is_q = h < HQ
        is_k = (h >= HQ) & (h < HQ + HKV)
        is_v = is_v & real
        q_dst = Q_OUT + (b * HQ + h) * (2 * HALF)
        k_dst = K_CACHE + (row * HKV + (h - HQ)) * (2 * HALF)
        v_dst = V_CACHE + (row * HKV + (h - HQ - HKV)) * (2 * HALF)
        tl.store(q_dst + d, o1, mask=is_q)
        tl.store(q_dst + HALF + d, o2, mask=is_q)
        tl.store(k_dst + d, o1, mask=is_k)
        tl.store(k_dst + HALF + d, o2, mask=is_k)
        tl.store(v_dst + d, o1, mask=is_v)
        tl.store(v_dst + HALF + d, o2, mask=is_v)

    @triton.jit  # type: ignore[misc]
    def silu_mul(GU, OUT, inner, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        b = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < inner
        g = tl.load(GU + b * 2 * inner + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(GU + b * 2 * inner + inner + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(OUT + b * inner + cols, (g / (1.0 + tl.exp(-g)) * u).to(OUT.dtype.element_ty), mask=mask)

    return add_rms, rope_store, silu_mul


def _block(n: int) -> int:
    return 1 << (n - 1).bit_length()


def add_rms(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float) -> Tensor:
    """``x += residual`` (in place, when given) and return RMSNorm(x) * weight; x is [B, H]."""
    out = torch.empty_like(x)
    kernel = _kernels()[0]
    kernel[(x.shape[0],)](
        x,
        residual if residual is not None else x,
        weight,
        out,
        x.shape[1],
        eps,
        HAS_R=residual is not None,
        BLOCK=_block(x.shape[1]),
        num_warps=4,
    )
    return out


def rope_store(
    qkv: Tensor,
    cos: Tensor,
    sin: Tensor,
    positions: Tensor,
    slots: Tensor,
    keys: Tensor,
    values: Tensor,
    heads: int,
    kv_heads: int,
) -> Tensor:
    """Rotated q [B, Hq, D]; rotated k and v stored at ``slots + positions`` in the cache."""
    batch = qkv.shape[0]
    head_dim = keys.shape[-1]
    q = torch.empty(batch, heads, head_dim, device=qkv.device, dtype=qkv.dtype)
    kernel = _kernels()[1]
    kernel[(batch,)](
        qkv,
        cos,
        sin,
        positions,
        slots,
        q,
        keys,
        values,
        qkv.stride(0),
        HQ=heads,
        HKV=kv_heads,
        HALF=head_dim // 2,
        HEADS_PAD=_block(heads + 2 * kv_heads),
        num_warps=4,
    )
    return q


def silu_mul(gate_up: Tensor) -> Tensor:
    batch, double = gate_up.shape
    inner = double // 2
    out = torch.empty(batch, inner, device=gate_up.device, dtype=gate_up.dtype)
    block = 1024
    kernel = _kernels()[2]
    kernel[(batch, (inner + block - 1) // block)](gate_up, out, inner, BLOCK=block, num_warps=4)
    return out
