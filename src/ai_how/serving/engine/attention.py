"""Ragged GQA decode attention: one query token per sequence against only that sequence's live keys.

The cache is flat: ``keys[slot + t]`` is token t of the sequence whose cache starts at ``slot``
([N, kv_heads, head_dim]). On CUDA a Triton kernel reads exactly ``lengths[b]`` tokens per sequence
(one program per sequence and KV head, all query heads of the group together, online softmax); on
CPU (or without Triton) a gather + SDPA does the same arithmetic. Both are graph-capturable:
lengths and slots are read on the device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ai_how.serving.engine import kernels


def decode(q: Tensor, keys: Tensor, values: Tensor, slots: Tensor, lengths: Tensor, scale: float) -> Tensor:
    """q [B, Hq, D]; keys/values [N, Hkv, D]; slots/lengths [B] -> [B, Hq, D]."""
    if q.is_cuda and kernels.available():
        return _decode_triton(q, keys, values, slots, lengths, scale)
    return decode_reference(q, keys, values, slots, lengths, scale)


def decode_reference(
    q: Tensor, keys: Tensor, values: Tensor, slots: Tensor, lengths: Tensor, scale: float, width: int = 0
) -> Tensor:
    """Gather each sequence's keys up to the longest (or ``width``) and mask the rest."""
    width = width or int(lengths.max())
    offsets = torch.arange(width, device=q.device)
    index = (slots[:, None] + offsets[None, :]).clamp_(max=keys.shape[0] - 1)  # [B, W]
    live = offsets[None, :] < lengths[:, None]
    k = keys[index].transpose(1, 2)  # [B, Hkv, W, D]
    v = values[index].transpose(1, 2)
    o = F.scaled_dot_product_attention(
        q[:, :, None], k, v, attn_mask=live[:, None, None, :], scale=scale, enable_gqa=True
    )
    return o[:, :, 0]


@functools.cache
def _triton_kernel() -> Any:
    import triton  # type: ignore[import-not-found,unused-ignore]
    import triton.language as tl  # type: ignore[import-not-found,unused-ignore]

    @triton.jit  # type: ignore[misc]
    def kernel(  # type: ignore[no-untyped-def]
        Q,
        K,
        V,
        Out,
        slots_ptr,
        lengths_ptr,
        scale,
        stride_qb,
        stride_qh,
        stride_kn,
        stride_kh,
        stride_ob,
        stride_oh,
        GROUP: tl.constexpr,
        GROUP_PAD: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        b = tl.program_id(0)
        kv_head = tl.program_id(1)
        slot = tl.load(slots_ptr + b).to(tl.int64)
        length = tl.load(lengths_ptr + b)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, HEAD_DIM)
        heads = kv_head * GROUP + g
        q_mask = g[:, None] < GROUP
        q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=q_mask, other=0.0)
        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        s_sum = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        t = tl.arange(0, BLOCK)
        for start in range(0, length, BLOCK):
            live = (start + t) < length
            rows = (slot + start + t).to(tl.int64)
            k = tl.load(
                K + rows[:, None] * stride_kn + kv_head * stride_kh + d[None, :],
                mask=live[:, None],
                other=0.0,
            )
            scores = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # [GROUP_PAD, BLOCK]
            scores = tl.where(live[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            p = tl.exp(scores - m_new[:, None])
            alpha = tl.exp(m - m_new)
            s_sum = s_sum * alpha + tl.sum(p, 1)
            v = tl.load(
                V + rows[:, None] * stride_kn + kv_head * stride_kh + d[None, :],
                mask=live[:, None],
                other=0.0,
            )
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
            m = m_new
        out = acc / s_sum[:, None]
        tl.store(
            Out + b * stride_ob + heads[:, None] * stride_oh + d[None, :],
            out.to(Out.dtype.element_ty),
            mask=q_mask,
        )

    return kernel


@dataclass(frozen=True)
class Launch:
    """How the Triton kernel is launched: tokens per loop iteration, warps per program, software-
    pipeline stages (None: Triton's default). ``bench/attention_configs.py`` times alternatives."""

    block: int = 32
    warps: int = 4
    stages: int | None = None


# bench/attention_configs.py on an H100 (docs/performance.md): 665 µs a step against 699 µs for (32, 4)
LAUNCH = Launch(block=16, warps=1)


def _decode_triton(
    q: Tensor,
    keys: Tensor,
    values: Tensor,
    slots: Tensor,
    lengths: Tensor,
    scale: float,
    launch: Launch = LAUNCH,
) -> Tensor:
    batch, heads, head_dim = q.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    _triton_kernel()[(batch, kv_heads)](
        q,
        keys,
        values,
        out,
        slots,
        lengths,
        scale,
        q.stride(0),
        q.stride(1),
        keys.stride(0),
        keys.stride(1),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        GROUP_PAD=max(16, 1 << (group - 1).bit_length()),
        HEAD_DIM=head_dim,
        BLOCK=launch.block,
        num_warps=launch.warps,
        **({} if launch.stages is None else {"num_stages": launch.stages}),
    )
    return out
