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
expected = attention.decode_reference(q, k, v, starts, lengths, 0.125)
for launch in (attention.LAUNCH, attention.Launch(block=32, warps=4)):
    torch.testing.assert_close(attention._decode_triton(q, k, v, starts, lengths, 0.125, launch), expected)

# add_rms adds the residual in place and normalises; silu_mul
x, r, w = torch.randn(7, 576), torch.randn(7, 576), torch.randn(576)
summed = x + r
out = kernels.add_rms(x, r, w, 1e-6)
torch.testing.assert_close(x, summed)
torch.testing.assert_close(out, summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-6) * w)
gu = torch.randn(7, 2 * 1536)
g, u = gu.chunk(2, -1)
torch.testing.assert_close(kernels.silu_mul(gu), F.silu(g) * u)

# the fused prefill (what the GPU's prefill graphs run) on right-padded prompts: the same logits and
# cache as the eager one, and padding positions written only to the scratch slot
from pathlib import Path
from ai_how.serving.engine.checkpoint import Checkpoint
from ai_how.serving.engine.kvcache import KVCache
from ai_how.serving.engine.model import Decoder

H, L, V = 64, 2, 50
config = {"model_type": "llama", "hidden_size": H, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 16, "num_hidden_layers": L, "vocab_size": V, "max_position_embeddings": 128,
          "intermediate_size": 96, "tie_word_embeddings": True}
weights = {"model.embed_tokens.weight": torch.randn(V, H), "model.norm.weight": torch.rand(H) + 0.5}
for i in range(L):
    a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
    weights.update({
        f"model.layers.{i}.input_layernorm.weight": torch.rand(H) + 0.5,
        f"model.layers.{i}.post_attention_layernorm.weight": torch.rand(H) + 0.5,
        a + "q_proj.weight": torch.randn(64, H) / 8, a + "k_proj.weight": torch.randn(32, H) / 8,
        a + "v_proj.weight": torch.randn(32, H) / 8, a + "o_proj.weight": torch.randn(H, 64) / 8,
        m + "gate_proj.weight": torch.randn(96, H) / 8, m + "up_proj.weight": torch.randn(96, H) / 8,
        m + "down_proj.weight": torch.randn(H, 96) / 8,
    })
decoder = Decoder(Checkpoint(Path("."), config, weights), torch.device("cpu"), torch.float32)
tokens = torch.randint(0, V, (3, 32))
lengths = torch.tensor([5, 32, 1])
slots = torch.tensor([0, 64, 128])
outs, caches = [], []
for fused in (False, True):
    cache = KVCache(L, 2, 16, [(64, 3)], torch.device("cpu"), torch.float32)
    outs.append(decoder.prefill(tokens, lengths, slots, cache, fused=fused))
    caches.append(cache)
torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
for layer in range(L):
    eager, fused = caches[0].keys[layer], caches[1].keys[layer]
    for row in range(3):
        live = slice(int(slots[row]), int(slots[row] + lengths[row]))
        torch.testing.assert_close(fused[live], eager[live], rtol=1e-4, atol=1e-4)
        rest = slice(int(slots[row] + lengths[row]), int(slots[row]) + 64)
        assert not fused[rest].any(), "a padding position was written outside the scratch slot"
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
