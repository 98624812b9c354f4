"""Host cost of the engine loop, without the model: a stand-in decoder answers instantly, so what is
timed is the scheduler's own Python per step (admission, bookkeeping, read-back, updates) and the
front end's dispatch. On a GPU this cost decides the step time once the kernels take ~1.5 ms.

    python bench/engine_host.py --batch 512 --requests 4096 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class _Shape:
    layers: int = 1
    kv_heads: int = 1
    head_dim: int = 8
    vocab: int = 64
    max_positions: int = 256


class InstantDecoder:
    """Answers every step with the same logits: no model work at all."""

    def __init__(self) -> None:
        self.shape = _Shape()
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._logits = torch.zeros(4096, self.shape.vocab)
        self._logits[:, 7] = 1.0

    def decode(self, tokens: Any, positions: Any, slots: Any, cache: Any, fused: Any = None) -> Any:
        return self._logits[: tokens.shape[0]]

    def prefill(self, tokens: Any, lengths: Any, slots: Any, cache: Any, fused: Any = None) -> Any:
        return self._logits[: tokens.shape[0]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--requests", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from ai_how.serving.engine.core import Engine
    from ai_how.serving.engine.frontend import AsyncLLM
    from ai_how.serving.engine.protocol import SamplingParams

    vocab = {f"t{i}": i for i in range(64)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")))
    decoder = InstantDecoder()
    llm = AsyncLLM(
        lambda emit: Engine(
            decoder, set(), emit, max_batch=args.batch, max_waiting=1 << 20, use_graphs=False
        ),
        tokenizer,
        "host",
    )
    llm.engine.start()
    params = SamplingParams(max_tokens=args.tokens, ignore_eos=True)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(llm.complete([1, 2, 3, 4], params) for _ in range(args.requests)))
        return time.perf_counter() - started

    asyncio.run(run())  # warm
    steps_before = llm.engine.stats.steps
    wall = asyncio.run(run())
    steps = llm.engine.stats.steps - steps_before
    llm.engine.stop()
    print(
        json.dumps(
            {
                "batch": args.batch,
                "requests": args.requests,
                "tokens": args.tokens,
                "wall_s": round(wall, 3),
                "steps": steps,
                "ms_per_step": round(wall / steps * 1000, 3),
                "req_per_s": round(args.requests / wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
