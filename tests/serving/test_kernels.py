"""The serving engine's Triton kernels (GPU-only in production) checked against PyTorch on the CPU,
in Triton's interpreter: the layouts, masks and cache writes a decode step relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

INTERPRETER = Path(sys.prefix) / "triton-interpreter"  # scripts/setup-python.sh installs it there

CHECKS = r"""
import torch
from torch.nn import functional as F
from ai_how.serving.engine import attention, kernels

torch.manual_seed(0)
B, HQ, HKV, D, N, P = 5, 9, 3, 64, 700, 100

# rope_store: rotated q out; rotated k and raw v at slot + position in the cache; nothing else written
qkv = torch.randn(B, (HQ + 2 * HKV) * D)
cos, sin = torch.randn(P, D), torch.randn(P, D)
pos, slots = torch.tensor([0, 3, 17, 50, 99]), torch.tensor([0, 128, 256, 384, 512])
keys, values = torch.zeros(N, HKV, D), torch.zeros(N, HKV, D)
q = kernels.rope_store(qkv, cos, sin, pos, slots, keys, values, HQ, HKV)

def rot(x, c, s):
    return x * c + torch.cat((-x[..., D // 2 :], x[..., : D // 2]), -1) * s

qr, kr, vr = qkv.view(B, HQ + 2 * HKV, D).split([HQ, HKV, HKV], 1)
c, s = cos[pos][:, None], sin[pos][:, None]
torch.testing.assert_close(q, rot(qr, c, s))
torch.testing.assert_close(keys[slots + pos], rot(kr, c, s))
assert torch.equal(values[slots + pos], vr)
untouched = torch.ones(N, dtype=torch.bool)
untouched[slots + pos] = False
assert not keys[untouched].any() and not values[untouched].any()

# ragged GQA decode attention against the gather + SDPA reference (block edges: 1, 31-33, 64, 97 tokens)
q = torch.randn(6, HQ, D)
k, v = torch.randn(N, HKV, D), torch.randn(N, HKV, D)
lengths, starts = torch.tensor([1, 31, 32, 33, 64, 97]), torch.tensor([0, 100, 200, 300, 400, 480])
torch.testing.assert_close(
    attention._decode_triton(q, k, v, starts, lengths, 0.125),
    attention.decode_reference(q, k, v, starts, lengths, 0.125),
)

# add_rms adds the residual in place and normalises; silu_mul
x, r, w = torch.randn(7, 576), torch.randn(7, 576), torch.randn(576)
summed = x + r
out = kernels.add_rms(x, r, w, 1e-6)
torch.testing.assert_close(x, summed)
torch.testing.assert_close(out, summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
gu = torch.randn(7, 2 * 1536)
g, u = gu.chunk(2, -1)
torch.testing.assert_close(kernels.silu_mul(gu), F.silu(g) * u)
print("kernels ok")
"""


@pytest.mark.skipif(
    not INTERPRETER.is_dir(), reason=f"no Triton interpreter at {INTERPRETER}: run make setup"
)
def test_triton_kernels_match_pytorch_in_the_interpreter() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(INTERPRETER), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", CHECKS], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kernels ok" in done.stdout
