"""A decoder-only transformer (Llama family) run from its HF weights by our own forward pass.

The checkpoint is read directly (``checkpoint.py``: config.json, safetensors, rotary tables), without
importing transformers; the forward here is ours so that the KV cache is the engine's flat, ragged
cache and the decode step can be captured in a CUDA graph. Supported: Llama, Mistral and Qwen2
style decoders (RMSNorm, rotary, GQA, SwiGLU; optional q/k/v biases). Anything else is served by
the naive engine (``engine: naive``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ai_how.serving.engine import attention, checkpoint, kernels

SUPPORTED = ("llama", "mistral", "qwen2")


PREFILL_QUERY_CHUNK = 1024


def _repeat_heads(x: Tensor, groups: int) -> Tensor:
    """[B, Hkv, L, D] -> [B, Hkv * groups, L, D], each head repeated ``groups`` times in place (as
    repeat_interleave, by a view and one copy: nothing the host waits for inside a CUDA graph)."""
    b, h, length, d = x.shape
    return x[:, :, None].expand(b, h, groups, length, d).reshape(b, h * groups, length, d)


def prefill_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Causal GQA attention over right-padded prompts.

    Up to ``PREFILL_QUERY_CHUNK`` tokens: plain causal attention, no mask. With right padding a real
    token's query only sees earlier positions, all real, so the padding mask changes nothing it
    reads (padding rows compute garbage nobody reads); without a mask SDPA takes its fused flash
    kernel, where the masked GQA call took a slow path that waited on the device (half the engine
    loop's time under load on an H100). Longer prompts go in chunks of queries with the mask: a
    masked SDPA materialises B x H x queries x keys scores, and chunk by chunk each query block
    reads only the keys it may see."""
    width = q.shape[2]
    if width <= PREFILL_QUERY_CHUNK:
        groups = q.shape[1] // k.shape[1]
        if groups > 1:  # flash attention wants as many key/value heads as query heads
            k, v = _repeat_heads(k, groups), _repeat_heads(v, groups)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    assert mask is not None, "prompts longer than PREFILL_QUERY_CHUNK need the padding mask"
    blocks = []
    for start in range(0, width, PREFILL_QUERY_CHUNK):
        end = min(width, start + PREFILL_QUERY_CHUNK)
        blocks.append(
            F.scaled_dot_product_attention(
                q[:, :, start:end],
                k[:, :, :end],
                v[:, :, :end],
                attn_mask=mask[:, :, start:end, :end],
                scale=scale,
                enable_gqa=True,
            )
        )
    return torch.cat(blocks, dim=2)


class UnsupportedModel(ValueError):
    """The checkpoint's architecture is not one this forward implements."""


def _unsupported(what: str) -> UnsupportedModel:
    return UnsupportedModel(f"our engine does not serve {what}; serve it with --engine naive or transformers")


@dataclass
class Layer:
    ln_attn: Tensor
    qkv: Tensor  # [(Hq + 2 Hkv) D, H]
    qkv_bias: Tensor | None
    out: Tensor  # [H, Hq D]
    ln_mlp: Tensor
    gate_up: Tensor  # [2 I, H]
    down: Tensor  # [H, I]


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    eps: float
    scale: float


class Decoder:
    """Weights in the layout our kernels want (fused qkv, fused gate/up) plus the rotary tables."""

    def __init__(self, source: checkpoint.Checkpoint, device: torch.device, dtype: torch.dtype) -> None:
        config, weights = source.config, source.weights
        model_type = config.get("model_type")
        if model_type not in SUPPORTED:
            raise _unsupported(f"model_type {model_type!r} (ours serves {', '.join(SUPPORTED)})")
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise _unsupported(f"hidden_act {act!r} (ours serves silu)")
        if "model.layers.0.self_attn.q_norm.weight" in weights:
            raise _unsupported("q/k norms in attention")
        if (
            "model.layers.0.self_attn.o_proj.bias" in weights
            or "model.layers.0.mlp.gate_proj.bias" in weights
        ):
            raise _unsupported("biases on the attention output or the MLP")
        window = config.get("sliding_window")
        positions = int(config.get("max_position_embeddings") or 2048)
        # Qwen2 declares a window it does not use unless use_sliding_window (its default: false).
        if window and config.get("use_sliding_window", model_type != "qwen2") and window < positions:
            raise _unsupported(f"sliding-window attention ({window} tokens)")
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
        if device.type == "cuda" and head_dim & (head_dim - 1):
            raise _unsupported(f"head_dim {head_dim} (the Triton kernels take powers of two)")
        layers = int(config["num_hidden_layers"])
        self.shape = Shape(
            layers=layers,
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            vocab=int(config["vocab_size"]),
            max_positions=positions,
            eps=float(config.get("rms_norm_eps", 1e-6)),
            scale=head_dim**-0.5,
        )
        self.device, self.dtype = device, dtype

        def w(*names: str) -> Tensor:
            try:
                parts = [weights[name] for name in names]
            except KeyError as exc:
                raise checkpoint.CheckpointError(
                    f"{source.model_dir}: the weights lack {exc.args[0]}"
                ) from None
            joined = parts[0] if len(parts) == 1 else torch.cat(parts)
            return joined.to(device=device, dtype=dtype).contiguous()

        self.embed = w("model.embed_tokens.weight")
        self.norm = w("model.norm.weight")
        tied = bool(config.get("tie_word_embeddings", False))  # HF's default for these models
        self.lm_head = self.embed if tied else w("lm_head.weight")
        self.layers: list[Layer] = []
        for i in range(layers):
            a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
            bias = None
            if a + "q_proj.bias" in weights:
                bias = w(a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias")
            self.layers.append(
                Layer(
                    ln_attn=w(f"model.layers.{i}.input_layernorm.weight"),
                    qkv=w(a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"),
                    qkv_bias=bias,
                    out=w(a + "o_proj.weight"),
                    ln_mlp=w(f"model.layers.{i}.post_attention_layernorm.weight"),
                    gate_up=w(m + "gate_proj.weight", m + "up_proj.weight"),
                    down=w(m + "down_proj.weight"),
                )
            )
        cos, sin = checkpoint.rotary_tables(source.model_dir, config, head_dim, positions)
        self.cos = cos.to(device=device, dtype=dtype).contiguous()  # [P, D]
        self.sin = sin.to(device=device, dtype=dtype).contiguous()

    @classmethod
    def load(cls, model_dir: Path, device: torch.device, dtype: torch.dtype) -> Decoder:
        """Our forward over the checkpoint in ``model_dir``: config and weights read directly."""
        return cls(checkpoint.load(model_dir), device, dtype)

    # ------------------------------------------------------------------ pieces
    def _rms(self, x: Tensor, weight: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.shape.eps)
        return weight * x32.to(x.dtype)

    @staticmethod
    def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _qkv(self, layer: Layer, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = self.shape
        qkv = F.linear(h, layer.qkv, layer.qkv_bias)
        q, k, v = qkv.split([s.heads * s.head_dim, s.kv_heads * s.head_dim, s.kv_heads * s.head_dim], -1)
        return (
            q.unflatten(-1, (s.heads, s.head_dim)),
            k.unflatten(-1, (s.kv_heads, s.head_dim)),
            v.unflatten(-1, (s.kv_heads, s.head_dim)),
        )

    def _mlp(self, layer: Layer, x: Tensor) -> Tensor:
        h = self._rms(x, layer.ln_mlp)
        gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, layer.down)

    def logits(self, x: Tensor) -> Tensor:
        return F.linear(self._rms(x, self.norm), self.lm_head)

    # ------------------------------------------------------------------ passes
    def decode(
        self, tokens: Tensor, positions: Tensor, slots: Tensor, cache: Any, fused: bool | None = None
    ) -> Tensor:
        """One token per sequence: tokens/positions/slots are [B]; returns logits [B, V] in the model's
        dtype (greedy takes their argmax as they are: a float32 copy of [1,024 x 49,152] logits per
        step is 200 MB written and read again; sampling casts the rows it samples).

        ``slots[b]`` is where sequence b's cache starts in the flat cache; its token at position p
        lives at ``slots[b] + p``. Everything here is device-side indexing, so it can be graph-captured.
        """
        if fused is None:
            fused = tokens.is_cuda and kernels.available()
        if fused:
            return self._decode_fused(tokens, positions, slots, cache)
        x = F.embedding(tokens, self.embed)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        where = slots + positions
        lengths = positions + 1
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, self._rms(x, layer.ln_attn))
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            cache.keys[i].index_copy_(0, where, k)
            cache.values[i].index_copy_(0, where, v)
            o = attention.decode(q, cache.keys[i], cache.values[i], slots, lengths, self.shape.scale)
            x = x + F.linear(o.flatten(1), layer.out)
            x = self._mlp(layer, x)
        return self.logits(x)

    def _decode_fused(self, tokens: Tensor, positions: Tensor, slots: Tensor, cache: Any) -> Tensor:
        """The same step with the fused Triton kernels: nine kernels per layer instead of ~35."""
        s = self.shape
        x = F.embedding(tokens, self.embed)
        lengths = positions + 1
        residual: Tensor | None = None
        for i, layer in enumerate(self.layers):
            h = kernels.add_rms(x, residual, layer.ln_attn, s.eps)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)
            q = kernels.rope_store(
                qkv, self.cos, self.sin, positions, slots, cache.keys[i], cache.values[i], s.heads, s.kv_heads
            )
            o = attention.decode(q, cache.keys[i], cache.values[i], slots, lengths, s.scale)
            h = kernels.add_rms(x, F.linear(o.flatten(1), layer.out), layer.ln_mlp, s.eps)
            residual = F.linear(kernels.silu_mul(F.linear(h, layer.gate_up)), layer.down)
        h = kernels.add_rms(x, residual, self.norm, s.eps)
        return F.linear(h, self.lm_head)

    def _prefill_fused(self, tokens: Tensor, lengths: Tensor, slots: Tensor, cache: Any) -> Tensor:
        """Prefill with the decode kernels applied to every prompt token as a row; padding rows
        write their k/v to the cache's scratch slot. Attention reads the prompts back from the cache."""
        s = self.shape
        batch, width = tokens.shape
        positions = torch.arange(width, device=tokens.device).expand(batch, width)
        valid = positions < lengths[:, None]
        row_slots = torch.where(valid, slots[:, None], cache.scratch.start - positions)
        flat_positions, flat_slots = positions.reshape(-1), row_slots.reshape(-1)
        index = (slots[:, None] + positions).clamp_(max=cache.tokens - 1)  # [B, L] cache rows
        mask = None  # only long prompts need it (see prefill_attention)
        if width > PREFILL_QUERY_CHUNK:
            mask = ((positions[0][None, :] <= positions[0][:, None])[None] & valid[:, None, :])[:, None]
        x = F.embedding(tokens.reshape(-1), self.embed)
        residual: Tensor | None = None
        for i, layer in enumerate(self.layers):
            keys, values = cache.keys[i], cache.values[i]
            h = kernels.add_rms(x, residual, layer.ln_attn, s.eps)
            qkv = F.linear(h, layer.qkv, layer.qkv_bias)
            q = kernels.rope_store(
                qkv, self.cos, self.sin, flat_positions, flat_slots, keys, values, s.heads, s.kv_heads
            )
            o = prefill_attention(
                q.view(batch, width, s.heads, s.head_dim).transpose(1, 2),
                keys[index].transpose(1, 2),
                values[index].transpose(1, 2),
                mask,
                s.scale,
            )
            h = kernels.add_rms(
                x, F.linear(o.transpose(1, 2).reshape(batch * width, -1), layer.out), layer.ln_mlp, s.eps
            )
            residual = F.linear(kernels.silu_mul(F.linear(h, layer.gate_up)), layer.down)
        assert residual is not None
        last = torch.arange(batch, device=x.device) * width + lengths - 1
        h = kernels.add_rms(x[last].contiguous(), residual[last].contiguous(), self.norm, s.eps)
        return F.linear(h, self.lm_head)

    def prefill(
        self, tokens: Tensor, lengths: Tensor, slots: Tensor, cache: Any, fused: bool | None = None
    ) -> Tensor:
        """Prompts padded to [B, L] (``lengths`` [B] real lengths): fills the cache, returns the
        logits of each prompt's last token [B, V]."""
        if fused is None:
            fused = tokens.is_cuda and kernels.available()
        if fused:
            return self._prefill_fused(tokens, lengths, slots, cache)
        batch, width = tokens.shape
        positions = torch.arange(width, device=tokens.device)
        valid = positions[None, :] < lengths[:, None]  # [B, L]
        where = (slots[:, None] + positions[None, :])[valid]
        mask = None  # only long prompts need it (see prefill_attention)
        if width > PREFILL_QUERY_CHUNK:
            causal = positions[None, :] <= positions[:, None]  # [L(q), L(k)]
            mask = (causal[None] & valid[:, None, :])[:, None]  # [B, 1, L, L]
        cos, sin = self.cos[:width][None, :, None], self.sin[:width][None, :, None]
        x = F.embedding(tokens, self.embed)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, self._rms(x, layer.ln_attn))  # [B, L, H, D]
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            cache.keys[i].index_copy_(0, where, k[valid])
            cache.values[i].index_copy_(0, where, v[valid])
            o = prefill_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, self.shape.scale
            )
            x = x + F.linear(o.transpose(1, 2).flatten(2), layer.out)
            x = self._mlp(layer, x)
        last = x[torch.arange(batch, device=x.device), lengths - 1]
        return self.logits(last)
