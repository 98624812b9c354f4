"""The decode step as CUDA graphs, one per batch-size bucket (1, 2, 4, ... max).

Inputs are lanes (where each sequence's latest token lives on the device), positions and cache
slots: the token itself never travels through the host, so the next step can be launched before
the host has read the previous step's tokens (the engine's overlap).

Without graphs the host launches ~300 kernels per step and bounds it at tens of milliseconds
whatever the batch; a replay costs one launch. A batch of n sequences replays the smallest bucket
of at least n; padding rows point at the cache's scratch slot. Capture takes seconds, not the
tens of seconds of a compile, so it stays on the start-up path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from ai_how.serving.engine.kvcache import KVCache
from ai_how.serving.engine.model import Decoder

LINEAR_FROM, LINEAR_STEP = 256, 128
T = TypeVar("T")


def pinned(array: np.ndarray, device: torch.device) -> Tensor:
    """A host array as a tensor ``device`` copies from without waiting: pinned for a GPU (a pageable
    copy would wait for the step in flight, losing the overlap; torch's caching host allocator keeps
    the pinned block until its copy has run), as it is for a CPU."""
    host = torch.from_numpy(array)
    return host.pin_memory() if device.type == "cuda" else host


class Captures:
    """CUDA graphs captured one at a time into one memory pool, without a device sync.

    ``torch.cuda.graph`` synchronises the device and empties the allocator's cache around every
    capture: with dozens of graphs that was most of the start-up time (4.6 s for the prefill graphs
    on an H100). Captured here, they cost what recording their kernels costs, so the engine can
    capture them while it serves (one per loop iteration, ``Engine.warm_up(background=True)``): a
    batch whose graph is not captured yet runs eagerly meanwhile. Capture errors are thread-local:
    the engine process's other threads (commands, stats) are never caught by a capture."""

    def __init__(self) -> None:
        self.pool: Any = None
        self._stream: torch.cuda.Stream | None = None

    @property
    def stream(self) -> torch.cuda.Stream:
        if self._stream is None:
            self._stream = torch.cuda.Stream()
        return self._stream

    def warm(self, run: Callable[[], object]) -> None:
        """``run`` eagerly on the capture stream, in the calling thread, before that thread captures:
        Triton compiles, and cuBLAS creates the thread's handle and workspace (created inside a
        capture, they fail it: CUBLAS_STATUS_NOT_INITIALIZED). ``run`` must not read the graphs'
        static inputs: they may hold live requests, whose cache it would overwrite."""
        if not torch.cuda.is_available():  # a CPU (tests): nothing to warm but the run itself
            with torch.inference_mode():
                run()
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream), torch.inference_mode():
            run()
        torch.cuda.current_stream().wait_stream(self.stream)

    def capture(self, run: Callable[[], T]) -> tuple[torch.cuda.CUDAGraph, T]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(self.stream), torch.inference_mode():
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                out = run()
            finally:
                graph.capture_end()
        self.pool = graph.pool()
        return graph, out


def bucket_sizes(max_batch: int) -> list[int]:
    """Powers of two up to 256, then every 128 up to ``max_batch``: past 256 rows the step's time
    grows with the batch (1.16 ms at 256, 1.55 at 512, 2.34 at 1,024 on an H100), so a batch of 600
    replays 640 rows, not 1,024."""
    sizes, n = [], 1
    while n < min(max_batch, LINEAR_FROM):
        sizes.append(n)
        n *= 2
    while n < max_batch:
        sizes.append(n)
        n += LINEAR_STEP
    sizes.append(max_batch)
    return sizes


class DecodeGraphs:
    def __init__(self, decoder: Decoder, cache: KVCache, max_batch: int, last_token: Tensor) -> None:
        self.decoder, self.cache = decoder, cache
        device = decoder.device
        self.sizes = bucket_sizes(max_batch)
        self.last_token = last_token  # [max_batch + 1]: each lane's latest token; the last lane is scratch
        self.scratch_lane = last_token.shape[0] - 1
        self.lanes = torch.full((max_batch,), self.scratch_lane, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.slots = torch.full((max_batch,), cache.scratch.start, dtype=torch.long, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, Tensor] = {}
        self.greedy: dict[int, Tensor] = {}
        self._captures = Captures()

    def warm(self) -> None:
        """One eager step at the largest size, in the calling thread (see ``Captures.warm``), on
        padding rows only (scratch lane and slot): never the static inputs, which may be live."""
        self._captures.warm(functools.partial(self._padding_step, self.sizes[-1]))

    def _padding_step(self, n: int) -> Tensor:
        device = self.decoder.device
        tokens = torch.zeros(n, dtype=torch.long, device=device)
        slots = torch.full((n,), self.cache.scratch.start, dtype=torch.long, device=device)
        return self.decoder.decode(tokens, torch.zeros_like(tokens), slots, self.cache)

    def jobs(self) -> list[Callable[[], None]]:
        """For the thread that captures: its warm-up, then one capture per batch size, smallest
        first (what the first requests need)."""
        return [self.warm, *(functools.partial(self._capture, n) for n in self.sizes)]

    def _capture(self, n: int) -> None:
        graph, (logits, greedy) = self._captures.capture(functools.partial(self._step_and_argmax, n))
        self.graphs[n], self.logits[n], self.greedy[n] = graph, logits, greedy

    def capture(self) -> None:
        """Every size now, largest first (the smaller ones then fit in the pool it left)."""
        self.warm()
        for n in reversed(self.sizes):
            self._capture(n)
        torch.cuda.synchronize()

    def _step_and_argmax(self, n: int) -> tuple[Tensor, Tensor]:
        logits = self._step(n)
        return logits, logits.argmax(-1)

    def _step(self, n: int) -> Tensor:
        tokens = self.last_token[self.lanes[:n]]
        return self.decoder.decode(tokens, self.positions[:n], self.slots[:n], self.cache)

    def run(self, lanes: Tensor, positions: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
        """Logits [n, V] and greedy tokens [n] for n live rows (views valid until the next run).
        Inputs may be pinned host tensors: they are copied asynchronously into the static buffers."""
        with torch.inference_mode():
            return self._run(lanes, positions, slots)

    def _run(self, lanes: Tensor, positions: Tensor, slots: Tensor) -> tuple[Tensor, Tensor]:
        n = lanes.shape[0]
        size = next(s for s in self.sizes if s >= n)
        self.lanes[:n].copy_(lanes, non_blocking=True)
        self.positions[:n].copy_(positions, non_blocking=True)
        self.slots[:n].copy_(slots, non_blocking=True)
        if size > n:
            self.lanes[n:size].fill_(self.scratch_lane)
            self.positions[n:size].zero_()
            self.slots[n:size].fill_(self.cache.scratch.start)
        graph = self.graphs.get(size)
        if graph is None:  # not captured yet (the engine captures while it serves): the same step, eagerly
            logits = self._step(size)
            return logits[:n], logits.argmax(-1)[:n]
        graph.replay()
        return self.logits[size][:n], self.greedy[size][:n]
