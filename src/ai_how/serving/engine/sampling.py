"""Next-token choice on the device: greedy, temperature, top-p, per-request seeds.

Sampling uses the exponential race (argmax of p / E, E ~ Exp(1)), which draws exactly from p and
keeps everything a tensor op; a seeded request draws its E from its own generator, so its tokens do
not depend on which other requests share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ai_how.serving.engine.protocol import SamplingParams


@dataclass
class RowSampler:
    """Per-sequence sampling state (its generator when seeded)."""

    params: SamplingParams
    generator: torch.Generator | None = field(default=None)


def sample(logits: Tensor, rows: list[RowSampler], greedy_tokens: Tensor | None = None) -> Tensor:
    """Tokens [B] for logits [B, V] (any float dtype; sampled in float32). ``greedy_tokens`` = argmax
    already computed (graph)."""
    greedy = greedy_tokens if greedy_tokens is not None else logits.argmax(-1)
    if all(r.params.greedy for r in rows):
        return greedy
    device = logits.device
    temps = torch.tensor([max(r.params.temperature, 1e-5) for r in rows], device=device)
    probs = torch.softmax(logits.float() / temps[:, None], dim=-1)
    top_ps = [r.params.top_p for r in rows]
    if min(top_ps) < 1.0:  # decided on the host: a device check would wait for the whole stream
        top_p = torch.tensor(top_ps, device=device)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before > top_p[:, None], 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    race = torch.empty_like(probs).exponential_()
    for i, row in enumerate(rows):
        if row.generator is not None and not row.params.greedy:
            race[i].exponential_(generator=row.generator)
    drawn = (probs / race).argmax(-1)
    is_greedy = torch.tensor([r.params.greedy for r in rows], device=device)
    return torch.where(is_greedy, greedy, drawn)


def row_sampler(params: SamplingParams, device: torch.device) -> RowSampler:
    generator = None
    if params.seed is not None and not params.greedy:
        generator = torch.Generator(device=device)
        generator.manual_seed(params.seed)
    return RowSampler(params, generator)
