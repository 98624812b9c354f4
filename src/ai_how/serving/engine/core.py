"""The engine loop: token-level continuous batching on one device, in one thread.

Requests join between decode steps (a prefill of everyone admitted, then they decode with the
rest) and leave as soon as they finish (EOS unless ``ignore_eos``, ``max_tokens``, the context end,
or an abort when the client went away), freeing their KV slot for the next waiting request. The
loop deals in token ids only: detokenising, stop strings and streaming live in the async front end
(``ai_how.serving.engine.frontend``), off this thread's hot path.

Updates leave through one callback per step (a list), so the event loop is woken once per step,
not once per token.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ai_how.serving.engine.kvcache import KVCache, Slot, plan_buckets
from ai_how.serving.engine.model import Decoder
from ai_how.serving.engine.sampling import RowSampler, SamplingParams, row_sampler, sample


@dataclass
class Update:
    """New tokens of one request since the last update; ``finish`` set on its last update."""

    request_id: int
    tokens: list[int]
    finish: str | None = None  # "stop" | "length" | "abort"


@dataclass
class Sequence:
    id: int
    prompt: list[int]
    params: SamplingParams
    sampler: RowSampler
    arrived: float
    slot: Slot | None = None
    position: int = 0  # tokens in the cache
    last_token: int = 0
    generated: int = 0


@dataclass
class EngineStats:
    """What /metrics reports; read without a lock (single writer, torn reads are harmless)."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    steps: int = 0
    prefills: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    batch_histogram: collections.Counter[int] = field(default_factory=collections.Counter)


class EngineFull(Exception):
    """The admission queue is full: the caller answers 429 with Retry-After."""


def check_request(prompt: list[int], params: SamplingParams, context_limit: int) -> None:
    """The limits every engine enforces before a request is queued, with one set of messages."""
    if not prompt:
        raise ValueError("the prompt is empty")
    if len(prompt) + params.max_tokens > context_limit:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceed the context of "
            f"{context_limit} tokens"
        )


class Engine:
    """Continuous batching over ``Decoder``. Thread-safe ``submit``/``abort``; ``emit`` gets updates."""

    def __init__(
        self,
        decoder: Decoder,
        eos_ids: set[int],
        emit: Callable[[list[Update]], None],
        max_batch: int = 256,
        max_waiting: int = 4096,
        max_prefill_tokens: int = 16384,
        use_graphs: bool | None = None,
        min_prefill_batch: int = 32,
        max_prefill_delay_s: float = 0.01,
    ) -> None:
        self.decoder = decoder
        self.eos_ids = eos_ids
        self.emit = emit
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.max_prefill_tokens = max_prefill_tokens
        self.min_prefill_batch = min_prefill_batch
        self.max_prefill_delay_s = max_prefill_delay_s
        shape = decoder.shape
        self.cache = KVCache(
            shape.layers,
            shape.kv_heads,
            shape.head_dim,
            plan_buckets(max_batch, shape.max_positions),
            decoder.device,
            decoder.dtype,
        )
        self.stats = EngineStats()
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._pending = 0  # submitted but not yet running (inbox + waiting); guarded by _lock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.graphs: Any = None
        if use_graphs is None:
            use_graphs = decoder.device.type == "cuda"
        if use_graphs:
            from ai_how.serving.engine.graphs import DecodeGraphs

            self.graphs = DecodeGraphs(decoder, self.cache, max_batch)
            self._host_tensors = [torch.zeros(max_batch, dtype=torch.long).pin_memory() for _ in range(3)]
            self._host = [t.numpy() for t in self._host_tensors]

    # ------------------------------------------------------------------ control (any thread)
    @property
    def context_limit(self) -> int:
        return min(self.decoder.shape.max_positions, self.cache.largest)

    def warm_up(self) -> None:
        """Capture the decode graphs (or run one eager step on CPU) before serving."""
        if self.graphs is not None:
            self.graphs.capture()
        else:
            with torch.inference_mode():
                one = torch.zeros(1, dtype=torch.long, device=self.decoder.device)
                slot = torch.full_like(one, self.cache.scratch.start)
                self.decoder.decode(one, one, slot, self.cache)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ai-how-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("wake", None))
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, prompt: list[int], params: SamplingParams) -> int:
        """Queue a request; its updates arrive through ``emit``. Raises EngineFull, ValueError."""
        check_request(prompt, params, self.context_limit)
        with self._lock:
            if self._pending >= self.max_waiting:
                raise EngineFull(f"{self._pending} requests are waiting")
            self._pending += 1
        request_id = next(self._ids)
        sampler = row_sampler(params, self.decoder.device)
        self._inbox.put(("add", Sequence(request_id, list(prompt), params, sampler, time.monotonic())))
        return request_id

    def abort(self, request_id: int) -> None:
        self._inbox.put(("abort", request_id))

    # ------------------------------------------------------------------ the loop (engine thread)
    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    self._drain(block=not self._running and not self._waiting)
                    updates: list[Update] = []
                    self._admit(updates)
                    if self._running:
                        self._decode(updates)
                    if updates:
                        self.emit(updates)
                    self._publish_stats()
                except Exception as exc:  # a step failed: fail every request, keep serving
                    self._fail_all(exc)

    def _drain(self, block: bool) -> None:
        aborted: set[int] = set()
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            while True:
                kind, value = item
                if kind == "add":
                    self._waiting.append(value)
                elif kind == "abort":
                    aborted.add(value)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        if aborted:
            self._abort(aborted)

    def _abort(self, ids: set[int]) -> None:
        updates = []
        kept_waiting: collections.deque[Sequence] = collections.deque()
        for seq in self._waiting:
            if seq.id in ids:
                updates.append(Update(seq.id, [], "abort"))
                with self._lock:
                    self._pending -= 1
            else:
                kept_waiting.append(seq)
        self._waiting = kept_waiting
        kept = []
        for seq in self._running:
            if seq.id in ids:
                updates.append(Update(seq.id, [], "abort"))
                self._release(seq)
            else:
                kept.append(seq)
        self._running = kept
        if updates:
            self.emit(updates)

    def _prefill_now(self) -> bool:
        """Prefill when idle, when enough requests wait to fill a worthwhile batch, or when the
        oldest has waited ``max_prefill_delay_s``: each prefill pauses every running sequence."""
        if not self._waiting:
            return False
        if not self._running or len(self._waiting) >= self.min_prefill_batch:
            return True
        return time.monotonic() - self._waiting[0].arrived >= self.max_prefill_delay_s

    def _admit(self, updates: list[Update]) -> None:
        """Prefill waiting requests into free slots (FIFO), within the batch and prefill budgets."""
        if not self._prefill_now():
            return
        admitted: list[Sequence] = []
        padded_width = 0
        while self._waiting and len(self._running) + len(admitted) < self.max_batch:
            seq = self._waiting[0]
            width = max(padded_width, len(seq.prompt))
            if admitted and width * (len(admitted) + 1) > self.max_prefill_tokens:
                break
            slot = self.cache.allocate(len(seq.prompt) + seq.params.max_tokens)
            if slot is None:
                break
            self._waiting.popleft()
            seq.slot, padded_width = slot, width
            admitted.append(seq)
        if not admitted:
            return
        with self._lock:
            self._pending -= len(admitted)
        device = self.decoder.device
        tokens = torch.zeros(len(admitted), padded_width, dtype=torch.long)
        for i, seq in enumerate(admitted):
            tokens[i, : len(seq.prompt)] = torch.tensor(seq.prompt)
        lengths = torch.tensor([len(s.prompt) for s in admitted])
        slots = torch.tensor([s.slot.start for s in admitted if s.slot is not None])
        logits = self.decoder.prefill(tokens.to(device), lengths.to(device), slots.to(device), self.cache)
        first = sample(logits, [s.sampler for s in admitted]).tolist()
        self.stats.prefills += 1
        self.stats.prompt_tokens += int(lengths.sum())
        for seq, token in zip(admitted, first, strict=True):
            seq.position = len(seq.prompt)
            self._accept(seq, token, updates)
            if updates[-1].finish is None:
                self._running.append(seq)

    def _decode(self, updates: list[Update]) -> None:
        running = self._running
        n = len(running)
        device = self.decoder.device
        if self.graphs is not None:
            # Persistent pinned host buffers: the copies are async and the next write comes after
            # this step's tokens were read back (a sync), so a buffer is never overwritten in flight.
            host = self._host
            host[0][:n] = [s.last_token for s in running]
            host[1][:n] = [s.position for s in running]
            host[2][:n] = [s.slot.start for s in running if s.slot is not None]
            logits, greedy = self.graphs.run(*(t[:n] for t in self._host_tensors))
        else:
            tokens = torch.tensor([s.last_token for s in running], dtype=torch.long)
            positions = torch.tensor([s.position for s in running], dtype=torch.long)
            slots = torch.tensor([s.slot.start for s in running if s.slot is not None], dtype=torch.long)
            logits = self.decoder.decode(
                tokens.to(device), positions.to(device), slots.to(device), self.cache
            )
            greedy = None
        chosen = sample(logits, [s.sampler for s in running], greedy).tolist()
        self.stats.steps += 1
        self.stats.batch_histogram[len(running)] += 1
        still = []
        for seq, token in zip(running, chosen, strict=True):
            seq.position += 1
            self._accept(seq, token, updates)
            if updates[-1].finish is None:
                still.append(seq)
        self._running = still

    def _accept(self, seq: Sequence, token: int, updates: list[Update]) -> None:
        seq.generated += 1
        seq.last_token = token
        self.stats.generated_tokens += 1
        finish = None
        if token in self.eos_ids and not seq.params.ignore_eos:
            finish = "stop"
        elif seq.generated >= seq.params.max_tokens:
            finish = "length"
        tokens = [] if finish == "stop" else [token]
        updates.append(Update(seq.id, tokens, finish))
        if finish is not None:
            self._release(seq)

    def _release(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.cache.release(seq.slot)
            seq.slot = None

    def _publish_stats(self) -> None:
        self.stats.running = len(self._running)
        self.stats.waiting = len(self._waiting) + self._inbox.qsize()
        self.stats.kv_usage = self.cache.usage()

    def _fail_all(self, exc: Exception) -> None:
        import traceback

        traceback.print_exc()
        updates = [Update(s.id, [], "error") for s in [*self._running, *self._waiting]]
        for seq in self._running:
            self._release(seq)
        with self._lock:
            self._pending -= len(self._waiting)
        self._running, self._waiting = [], collections.deque()
        if updates:
            self.emit(updates)
