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
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ai_how.serving.engine.kvcache import KVCache, Slot, plan_buckets
from ai_how.serving.engine.model import Decoder
from ai_how.serving.engine.sampling import RowSampler, SamplingParams, row_sampler, sample


@dataclass(slots=True)
class Update:
    """New tokens of one request since the last update; ``finish`` set on its last update."""

    request_id: int
    tokens: list[int]
    finish: str | None = None  # "stop" | "length" | "abort"


@dataclass(eq=False)
class Sequence:
    id: int
    prompt: list[int]
    params: SamplingParams
    sampler: RowSampler
    arrived: float
    slot: Slot | None = None
    lane: int = -1  # where its latest token lives on the device
    launched: int = 0  # tokens whose computation was launched (the first comes from the prefill)
    seen: int = 0  # tokens read back and reported
    done: bool = False  # finished or aborted: later results for it are dropped


@dataclass
class Launched:
    """One launched prefill or decode step whose tokens are on their way to pinned host memory."""

    sequences: list[Sequence]
    tokens: torch.Tensor  # pinned host view, valid once ``ready`` has completed
    ready: Any  # a CUDA event (None on CPU: the copy is synchronous)


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


def kv_cache_tokens(shape: Any, decoder: Decoder, budget: int | None) -> int:
    """Tokens the KV cache may hold: ``budget`` bytes, or by default half the GPU memory still free
    after the weights (2 GiB on the CPU)."""
    if budget is None:
        if decoder.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(decoder.device)
            budget = free // 2
        else:
            budget = 2 << 30
    element = torch.empty((), dtype=decoder.dtype).element_size()
    per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * element
    return max(1, int(budget) // int(per_token))


def _host_buffer(size: int, pin: bool) -> torch.Tensor:
    buffer = torch.zeros(size, dtype=torch.long)
    return buffer.pin_memory() if pin else buffer


class EngineFull(Exception):
    """The admission queue is full: the caller answers 429 with Retry-After."""


class EngineGone(Exception):
    """The engine (process) has stopped: the caller answers 503; the model reports not ready."""


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
        kv_cache_bytes: int | None = None,
        min_prefill_batch: int = 64,
        max_prefill_delay_s: float = 0.02,
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
            plan_buckets(max_batch, shape.max_positions, kv_cache_tokens(shape, decoder, kv_cache_bytes)),
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
        self._inflight: list[Launched] = []
        self._live: dict[int, Sequence] = {}  # every request not yet given its final update
        self._updates: list[Update] = []  # this iteration's, until emitted
        self.broken: str | None = None
        self.on_fatal: Callable[[str], None] | None = None
        device = decoder.device
        pin = device.type == "cuda"
        self.last_token = torch.zeros(max_batch + 1, dtype=torch.long, device=device)  # + a scratch lane
        self._free_lanes = list(reversed(range(max_batch)))
        # Pinned host buffers: step inputs go up and sampled tokens come back without a blocking copy.
        # Two sets of input buffers alternate by step: when step t's inputs are written, step t-2's
        # tokens were read back, so its uploads (earlier in the stream) are done. Read-back buffers
        # form a ring of four: at most two records (a prefill and a step) per iteration, and the
        # previous iteration's two are still to be read while the current ones are written.
        self._inputs = [[_host_buffer(max_batch, pin) for _ in range(3)] for _ in range(2)]
        self._input_turn = 0
        self._readback = [_host_buffer(max_batch, pin) for _ in range(4)]
        self._readback_turn = 0
        self.graphs: Any = None
        if use_graphs is None:
            use_graphs = device.type == "cuda"
        if use_graphs:
            from ai_how.serving.engine.graphs import DecodeGraphs

            self.graphs = DecodeGraphs(decoder, self.cache, max_batch, self.last_token)

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
        # The loop and the event loop share the GIL: hand it over every 0.5 ms (default 5 ms), so a
        # busy event loop never holds a decode step back by whole milliseconds.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self._thread = threading.Thread(target=self._loop, name="ai-how-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("wake", None))
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, prompt: list[int], params: SamplingParams) -> int:
        """Queue a request; its updates arrive through ``emit``. Raises EngineFull, ValueError."""
        if self.broken is not None:
            raise EngineGone(self.broken)
        check_request(prompt, params, self.context_limit)
        with self._lock:
            if self._pending >= self.max_waiting:
                raise EngineFull(f"{self._pending} requests are waiting")
            request_id = next(self._ids)
        self.submit_with_id(request_id, prompt, params)
        return request_id

    def submit_with_id(self, request_id: int, prompt: list[int], params: SamplingParams) -> None:
        """Queue a request whose id (and admission) the caller decided: the engine process's parent."""
        check_request(prompt, params, self.context_limit)
        sampler = row_sampler(params, self.decoder.device)  # a bad seed fails here, nothing counted yet
        with self._lock:
            self._pending += 1
        self._inbox.put(("add", Sequence(request_id, list(prompt), params, sampler, time.monotonic())))

    def abort(self, request_id: int) -> None:
        self._inbox.put(("abort", request_id))

    # ------------------------------------------------------------------ the loop (engine thread)
    def _loop(self) -> None:
        """Launch step t, then read back step t-1 while the GPU computes t (the overlap): host work
        (finishes, updates, admission) hides behind the device's work instead of adding to it."""
        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    idle = not self._running and not self._waiting and not self._inflight
                    self._drain(block=idle)
                    launched = self._admit()
                    if self._running:
                        launched.append(self._launch_decode())
                    ready, self._inflight = self._inflight, launched
                    if not launched:  # nothing new runs: read everything back now
                        ready, self._inflight = ready + launched, []
                    updates = self._updates = []
                    for record in ready:
                        self._read_back(record, updates)
                    self._updates = []
                    if updates:
                        self.emit(updates)
                    self._publish_stats()
                except Exception as exc:  # a step failed: fail every request, keep serving
                    fatal = _fatal(exc)
                    try:
                        self._fail_all(exc)
                    except Exception:  # emitting failed too: nothing left to tell anyone
                        traceback.print_exc()
                    if fatal:  # the device is unusable (a sticky CUDA error): stop taking work
                        self.broken = f"the engine failed: {exc}"
                        if self.on_fatal is not None:
                            self.on_fatal(self.broken)
                        return

    def _drain(self, block: bool) -> None:
        aborted: set[int] = set()
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            while True:
                kind, value = item
                if kind == "add":
                    self._waiting.append(value)
                    self._live[value.id] = value
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
                self._live.pop(seq.id, None)
                with self._lock:
                    self._pending -= 1
            else:
                kept_waiting.append(seq)
        self._waiting = kept_waiting
        for seq in self._running:
            if seq.id in ids:
                updates.append(Update(seq.id, [], "abort"))
                self._retire(seq)
        self._running = [s for s in self._running if not s.done]
        if updates:
            self.emit(updates)

    def _prefill_now(self) -> bool:
        """Prefill when idle, when enough requests wait to fill a worthwhile batch, or when the
        oldest has waited ``max_prefill_delay_s``: each prefill pauses every running sequence."""
        if not self._waiting or not self._free_lanes:
            return False
        if not self._running or len(self._waiting) >= self.min_prefill_batch:
            return True
        return time.monotonic() - self._waiting[0].arrived >= self.max_prefill_delay_s

    def _admit(self) -> list[Launched]:
        """Prefill waiting requests into free slots and lanes (FIFO), within the prefill budget."""
        if not self._prefill_now():
            return []
        admitted: list[Sequence] = []
        padded_width = 0
        while self._waiting and self._free_lanes:
            seq = self._waiting[0]
            width = max(padded_width, len(seq.prompt))
            if admitted and width * (len(admitted) + 1) > self.max_prefill_tokens:
                break
            slot = self.cache.allocate(len(seq.prompt) + seq.params.max_tokens)
            if slot is None:
                break
            self._waiting.popleft()
            seq.slot, seq.lane, padded_width = slot, self._free_lanes.pop(), width
            admitted.append(seq)
        if not admitted:
            return []
        with self._lock:
            self._pending -= len(admitted)
        device = self.decoder.device
        tokens = torch.zeros(len(admitted), padded_width, dtype=torch.long)
        for i, seq in enumerate(admitted):
            tokens[i, : len(seq.prompt)] = torch.tensor(seq.prompt)
        lengths = torch.tensor([len(s.prompt) for s in admitted])
        slots = torch.tensor([s.slot.start for s in admitted if s.slot is not None])
        lanes = torch.tensor([s.lane for s in admitted])
        logits = self.decoder.prefill(tokens.to(device), lengths.to(device), slots.to(device), self.cache)
        first = sample(logits, [s.sampler for s in admitted])
        self.stats.prefills += 1
        self.stats.prompt_tokens += int(lengths.sum())
        for seq in admitted:
            seq.launched = 1
            if seq.params.max_tokens > 1:
                self._running.append(seq)
            else:
                self._release_slot(seq)
        return [self._launched(admitted, lanes, first)]

    def _launch_decode(self) -> Launched:
        running = self._running
        n = len(running)
        buffers = self._inputs[self._input_turn]
        self._input_turn ^= 1
        lanes, positions, slots = (t[:n] for t in buffers)
        lanes.numpy()[:] = [s.lane for s in running]
        positions.numpy()[:] = [len(s.prompt) + s.launched - 1 for s in running]
        slots.numpy()[:] = [s.slot.start for s in running if s.slot is not None]
        if self.graphs is not None:
            logits, greedy = self.graphs.run(lanes, positions, slots)
        else:
            device = self.decoder.device
            tokens = self.last_token[lanes.to(device)]
            logits = self.decoder.decode(tokens, positions.to(device), slots.to(device), self.cache)
            greedy = None
        chosen = sample(logits, [s.sampler for s in running], greedy)
        self.stats.steps += 1
        self.stats.batch_histogram[n] += 1
        still = []
        for seq in running:
            seq.launched += 1
            if seq.launched >= seq.params.max_tokens:
                self._release_slot(seq)  # its last token is computed: later work may reuse the slot
            else:
                still.append(seq)
        self._running = still
        return self._launched(list(running), lanes.to(self.decoder.device, non_blocking=True), chosen)

    def _launched(self, sequences: list[Sequence], lanes: torch.Tensor, chosen: torch.Tensor) -> Launched:
        """Record each lane's new token on the device and start its copy to the host."""
        self.last_token.index_copy_(0, lanes.to(self.last_token.device), chosen)
        buffer = self._readback[self._readback_turn]
        self._readback_turn = (self._readback_turn + 1) % len(self._readback)
        host = buffer[: len(sequences)]
        if chosen.is_cuda:
            host.copy_(chosen, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            host.copy_(chosen)
            ready = None
        return Launched(sequences, host, ready)

    def _read_back(self, record: Launched, updates: list[Update]) -> None:
        if record.ready is not None:
            record.ready.synchronize()
        tokens = record.tokens.tolist()
        eos = self.eos_ids
        append = updates.append  # the hot loop of the host side: one pass, locals only
        finished = False
        counted = 0
        for seq, token in zip(record.sequences, tokens, strict=True):
            if seq.done:
                continue  # aborted, or its EOS came a step earlier: this token was computed in vain
            seq.seen += 1
            counted += 1
            if token in eos and not seq.params.ignore_eos:
                append(Update(seq.id, [], "stop"))
                self._retire(seq)
                finished = True
            elif seq.seen >= seq.params.max_tokens:
                append(Update(seq.id, [token], "length"))
                self._retire(seq)
            else:
                append(Update(seq.id, [token]))
        self.stats.generated_tokens += counted
        if finished:
            self._running = [s for s in self._running if not s.done]

    def _retire(self, seq: Sequence) -> None:
        seq.done = True
        self._live.pop(seq.id, None)
        self._release_slot(seq)
        if seq.lane >= 0:
            self._free_lanes.append(seq.lane)
            seq.lane = -1

    def _release_slot(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.cache.release(seq.slot)
            seq.slot = None

    def _publish_stats(self) -> None:
        self.stats.running = len(self._running)
        self.stats.waiting = len(self._waiting) + self._inbox.qsize()
        self.stats.kv_usage = self.cache.usage()

    def _fail_all(self, exc: Exception) -> None:
        """Every request the engine holds gets its final update: those whose results were already
        read first, then an error for everyone else (waiting, running, in flight, mid-prefill)."""
        traceback.print_exc()
        updates, self._updates = self._updates, []
        updates += [Update(seq.id, [], "error") for seq in self._live.values() if not seq.done]
        for seq in list(self._live.values()):
            self._retire(seq)
        with self._lock:
            self._pending -= len(self._waiting)
        self._running, self._waiting, self._inflight = [], collections.deque(), []
        if updates:
            self.emit(updates)


def _fatal(exc: Exception) -> bool:
    """A CUDA error other than running out of memory poisons the context: later steps all fail."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    return isinstance(exc, RuntimeError) and ("CUDA error" in str(exc) or "device-side assert" in str(exc))
