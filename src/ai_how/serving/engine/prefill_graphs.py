"""The prefill as CUDA graphs, one per (batch, width) bucket.

An eager prefill launches ~15 kernels per layer from Python (~450 for a 30-layer model) and every
running sequence waits for it: on an H100 under 3,000 req/s it took ~60% of the engine thread
(py-spy), so decode steps took 2-3x the GPU's time. A replay is one launch. Prompts are padded to the
smallest bucket holding them (rows of length 1 on the cache's scratch slot fill the batch; padding
positions write to the scratch slot too), so the graphs see fixed shapes; prompts wider than the
widest bucket, or batches past the token budget, run eagerly as before.

Without capture (a CPU, or tests) ``run`` pads the same way and runs the eager forward, so the
padding itself is exercised everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ai_how.serving.engine.graphs import Captures, pinned
from ai_how.serving.engine.kvcache import KVCache
from ai_how.serving.engine.model import Decoder

WIDTHS = (32, 64, 128, 256, 512)
MAX_GRAPH_TOKENS = 8192  # past this a prefill is compute-bound: eager costs the same

Bucket = tuple[int, int]  # (batch rows, prompt width)


def prefill_buckets(max_batch: int, max_positions: int, max_tokens: int = MAX_GRAPH_TOKENS) -> list[Bucket]:
    """Powers of two rows per width (plus the largest batch that fits), ``rows * width <= max_tokens``."""
    buckets: list[Bucket] = []
    for width in WIDTHS:
        if width > max_positions:
            break
        largest = min(max_batch, max_tokens // width)
        rows = 1
        while rows < largest:
            buckets.append((rows, width))
            rows *= 2
        if largest >= 1:
            buckets.append((largest, width))
    return buckets


def _size(bucket: Bucket) -> tuple[int, int]:
    """Buckets in order of padded tokens (then width)."""
    return bucket[0] * bucket[1], bucket[1]


def pick(buckets: list[Bucket], rows: int, width: int) -> Bucket | None:
    """The bucket with the fewest padded tokens that holds ``rows`` prompts of ``width`` tokens."""
    fits = [b for b in buckets if b[0] >= rows and b[1] >= width]
    return min(fits, key=_size) if fits else None


class PrefillGraphs:
    def __init__(self, decoder: Decoder, cache: KVCache, buckets: list[Bucket]) -> None:
        self.decoder, self.cache, self.buckets = decoder, cache, buckets
        self.graphs: dict[Bucket, torch.cuda.CUDAGraph] = {}
        self.logits: dict[Bucket, Tensor] = {}
        # Per bucket one static input [rows, width + 2]: the prompts, then each row's length and slot.
        self.inputs = {b: torch.from_numpy(self._host(b)).to(decoder.device) for b in buckets}
        self.runs = 0  # prefills that went through a bucket
        self._captures = Captures()

    def _host(self, bucket: Bucket) -> np.ndarray:
        """A bucket's input with every row padding: length 1 on the scratch slot."""
        rows, width = bucket
        host = np.zeros((rows, width + 2), dtype=np.int64)
        host[:, width] = 1
        host[:, width + 1] = self.cache.scratch.start
        return host

    def _forward(self, bucket: Bucket, data: Tensor) -> Tensor:
        width = bucket[1]
        return self.decoder.prefill(data[:, :width], data[:, width], data[:, width + 1], self.cache)

    def warm(self) -> None:
        """One eager prefill of the smallest bucket, in the calling thread (see ``Captures.warm``),
        from an all-padding input: never the static inputs, which may hold live prompts. (The
        Triton kernels do not specialise on rows or widths; the decode warm-up compiled them.)"""
        bucket = min(self.buckets, key=_size)
        padding = torch.from_numpy(self._host(bucket)).to(self.decoder.device)
        self._captures.warm(functools.partial(self._forward, bucket, padding))

    def jobs(self) -> list[Callable[[], None]]:
        """For the thread that captures: its warm-up, then one capture per bucket, fewest tokens first."""
        return [self.warm, *(functools.partial(self._capture, b) for b in sorted(self.buckets, key=_size))]

    def _capture(self, bucket: Bucket) -> None:
        graph, logits = self._captures.capture(functools.partial(self._forward, bucket, self.inputs[bucket]))
        self.graphs[bucket], self.logits[bucket] = graph, logits

    def capture(self) -> None:
        """Every bucket now, largest first."""
        self.warm()
        for bucket in sorted(self.buckets, key=_size, reverse=True):
            self._capture(bucket)
        torch.cuda.synchronize()

    def run(self, prompts: np.ndarray, lengths: np.ndarray, slots: np.ndarray) -> Tensor | None:
        """Logits [rows, V] of each prompt's last token (a view valid until the next run), or None
        when no bucket holds these prompts (the caller prefills eagerly)."""
        rows, width = prompts.shape
        bucket = pick(self.buckets, rows, width)
        if bucket is None:
            return None
        host = self._host(bucket)
        padded = bucket[1]
        host[:rows, :width] = prompts
        host[:rows, padded] = lengths
        host[:rows, padded + 1] = slots
        self.runs += 1
        self.inputs[bucket].copy_(pinned(host, self.decoder.device), non_blocking=True)
        graph = self.graphs.get(bucket)
        if graph is None:  # not captured (yet, or a CPU): the same padded shapes, eagerly
            return self._forward(bucket, self.inputs[bucket])[:rows]
        graph.replay()
        return self.logits[bucket][:rows]
