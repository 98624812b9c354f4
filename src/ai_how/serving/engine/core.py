"""The engine loop: token-level continuous batching on one device, in one thread.

Requests join between decode steps (a prefill of everyone admitted, then they decode with the
rest) and leave as soon as they finish (EOS unless ``ignore_eos``, ``max_tokens``, the context end,
or an abort when the client went away), freeing their KV slot for the next waiting request. The
loop deals in token ids only: detokenising, stop strings and streaming live in the async front end
(``ai_how.serving.engine.frontend``), off this thread's hot path.

Per-step bookkeeping is a handful of numpy operations over *lanes* (a running sequence's row: its
position, cache slot, tokens so far), never a Python loop over the batch: at a 1.5 ms decode step
on an H100 the host's per-sequence Python was what bounded the engine (~4 ms per step at batch 512
before, measured by ``bench/engine_host.py``). Python runs per request (admission, finish), not per
token.

Updates leave through one callback per step (a list). A request gets its first token at once (time
to first token is measured where it happens), then its tokens every ``report_every`` (1 for a
token-by-token stream, the front end's coalescing interval, or never for an answer read once), then
the rest with its finish.
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ai_how.serving.engine.graphs import pinned
from ai_how.serving.engine.kvcache import KVCache, Slot, plan_buckets
from ai_how.serving.engine.model import Decoder
from ai_how.serving.engine.protocol import (
    EngineFull,
    EngineGone,
    EngineStats,
    SamplingParams,
    Update,
    check_request,
)
from ai_how.serving.engine.sampling import RowSampler, row_sampler, sample


@dataclass(eq=False)
class Sequence:
    """One request, from submission until its final update (per-request state; per-token state
    lives in the engine's lane arrays)."""

    id: int
    prompt: list[int]
    params: SamplingParams
    sampler: RowSampler
    arrived: float
    slot: Slot | None = None
    lane: int = -1


@dataclass
class Launched:
    """One launched prefill or decode step whose tokens are on their way to pinned host memory."""

    lanes: np.ndarray  # the lanes it computed, in row order
    generations: np.ndarray  # each lane's generation at launch: a reused lane's late tokens are dropped
    tokens: torch.Tensor  # pinned host view, valid once ``ready`` has completed
    ready: Any  # a CUDA event (None on CPU: the copy is synchronous)
    began: Any = None  # a CUDA event recorded before its work: ``began`` to ``ready`` is its device time
    prefill: bool = False


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


class _Lanes:
    """Per-lane arrays (a lane = one running sequence's row; the last lane is scratch)."""

    def __init__(self, count: int, width: int) -> None:
        self.live = np.zeros(count, dtype=bool)
        self.generation = np.zeros(count, dtype=np.int64)
        self.position = np.zeros(count, dtype=np.int64)  # of the token the next decode step feeds
        self.slot = np.zeros(count, dtype=np.int64)  # where its KV cache starts in the flat cache
        self.to_launch = np.zeros(count, dtype=np.int64)  # tokens still to compute
        self.seen = np.zeros(count, dtype=np.int64)  # tokens read back
        self.sent = np.zeros(count, dtype=np.int64)  # tokens already in an update
        self.max_tokens = np.zeros(count, dtype=np.int64)
        self.stops_at_eos = np.zeros(count, dtype=bool)
        self.report_every = np.ones(count, dtype=np.int64)
        self.greedy = np.ones(count, dtype=bool)
        self.tokens = np.zeros((count, width), dtype=np.int64)  # what each lane generated so far


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
        padded_prefill: bool | None = None,
    ) -> None:
        """``use_graphs`` (default: on a GPU): decode and prefill as CUDA graphs. ``padded_prefill``
        (default: with graphs): prompts padded to the prefill graphs' buckets, run eagerly when not
        captured (how a CPU exercises the padding)."""
        self.decoder = decoder
        self._eos = np.array(sorted(eos_ids), dtype=np.int64)
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
        self._lanes = _Lanes(max_batch + 1, self.context_limit)
        self._lane_seq: list[Sequence | None] = [None] * (max_batch + 1)
        self._running = np.zeros(0, dtype=np.int64)  # lanes with tokens still to launch, in order
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
        self.prefill_graphs: Any = None
        self.prefill_capture_s = 0.0
        self._captures: collections.deque[Callable[[], None]] = collections.deque()
        self._captures_begun: float | None = None
        if use_graphs is None:
            use_graphs = device.type == "cuda"
        if use_graphs:
            from ai_how.serving.engine.graphs import DecodeGraphs

            self.graphs = DecodeGraphs(decoder, self.cache, max_batch, self.last_token)
        if padded_prefill is None:
            padded_prefill = use_graphs
        if padded_prefill:
            from ai_how.serving.engine.prefill_graphs import MAX_GRAPH_TOKENS, PrefillGraphs, prefill_buckets

            buckets = prefill_buckets(
                max_batch, self.context_limit, min(max_prefill_tokens, MAX_GRAPH_TOKENS)
            )
            self.prefill_graphs = PrefillGraphs(decoder, self.cache, buckets)

    # ------------------------------------------------------------------ control (any thread)
    @property
    def context_limit(self) -> int:
        return min(self.decoder.shape.max_positions, self.cache.largest)

    def warm_up(self, background: bool = False) -> None:
        """Before serving: capture the decode and prefill graphs (or run one eager step on CPU).
        ``background``: only compile the kernels now and capture the graphs from the loop, one per
        iteration, while serving (cold start: the engine process is ready seconds sooner)."""
        if self.graphs is None:
            with torch.inference_mode():
                one = torch.zeros(1, dtype=torch.long, device=self.decoder.device)
                slot = torch.full_like(one, self.cache.scratch.start)
                self.decoder.decode(one, one, slot, self.cache)
            return
        if not background:
            self.graphs.capture()
            if self.prefill_graphs is not None:
                begun = time.monotonic()
                self.prefill_graphs.capture()
                self.prefill_capture_s = time.monotonic() - begun
            return
        self.graphs.warm()  # the kernels compile before "ready"; the loop's thread warms itself again
        jobs = self.graphs.jobs()
        if self.prefill_graphs is not None:
            self.prefill_graphs.warm()
            jobs += self.prefill_graphs.jobs()
        self._captures = collections.deque(jobs)

    def _capture_next(self) -> None:
        """One pending graph (a few ms of recording); says when the last is done."""
        if self._captures_begun is None:
            self._captures_begun = time.monotonic()
        try:
            self._captures.popleft()()
        except Exception as exc:  # serve on without graphs; a sticky CUDA error fails the next step
            print(
                f"engine: graph capture failed, serving without the rest: {exc}", file=sys.stderr, flush=True
            )
            self._captures.clear()
            return
        if not self._captures:
            took = time.monotonic() - self._captures_begun
            print(f"engine: graphs captured while serving in {took:.2f} s", file=sys.stderr, flush=True)

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
        with self._lock:  # with ``broken`` set under this lock, no request is queued after the last drain
            if self.broken is not None:
                raise EngineGone(self.broken)
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
                    idle = not len(self._running) and not self._waiting and not self._inflight
                    self._drain(block=idle and not self._captures)
                    launched = self._admit()
                    if len(self._running):
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
                    if self._captures:
                        self._capture_next()
                except Exception as exc:  # a step failed: fail every request, keep serving
                    traceback.print_exc()
                    fatal = _fatal(exc)
                    reason = f"the engine failed: {exc}"
                    if fatal:  # the device is unusable (a sticky CUDA error): refuse new work first,
                        with self._lock:  # so none arrives after the last answer
                            self.broken = reason
                    try:
                        self._fail_all()
                        if fatal:  # and answer what was submitted while the first answers went out
                            self._drain(block=False)
                            self._fail_all()
                    except Exception:  # emitting failed too: nothing left to tell anyone
                        traceback.print_exc()
                    if fatal:
                        if self.on_fatal is not None:
                            self.on_fatal(reason)
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
        for request_id in ids:
            held = self._live.get(request_id)
            if held is not None and held.lane >= 0:
                updates.append(Update(held.id, [], "abort"))
                self._retire(held)
        self._drop_retired()
        if updates:
            self.emit(updates)

    def _prefill_now(self) -> bool:
        """Prefill when idle, when enough requests wait to fill a worthwhile batch, or when the
        oldest has waited ``max_prefill_delay_s``: each prefill pauses every running sequence."""
        if not self._waiting or not self._free_lanes:
            return False
        if not len(self._running) or len(self._waiting) >= self.min_prefill_batch:
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
        lanes = np.array([s.lane for s in admitted], dtype=np.int64)
        prompts = np.zeros((len(admitted), padded_width), dtype=np.int64)
        lengths = np.array([len(s.prompt) for s in admitted], dtype=np.int64)
        for i, seq in enumerate(admitted):
            prompts[i, : len(seq.prompt)] = seq.prompt
            self._lane_seq[seq.lane] = seq
        self._open_lanes(lanes, admitted, lengths)
        slots = self._lanes.slot[lanes]
        began = _timing_event(self.decoder.device)
        logits = None
        if self.prefill_graphs is not None:
            logits = self.prefill_graphs.run(prompts, lengths, slots)
        upload = self._upload
        if logits is None:
            logits = self.decoder.prefill(upload(prompts), upload(lengths), upload(slots), self.cache)
        first = sample(logits, [s.sampler for s in admitted])
        self.stats.prefills += 1
        self.stats.prompt_tokens += int(lengths.sum())
        more = self._lanes.to_launch[lanes] > 0
        for seq in itertools.compress(admitted, ~more):
            self._release_slot(seq)  # max_tokens 1: the prefill computed its only token
        self._running = np.concatenate([self._running, lanes[more]])
        return [self._launched(lanes, upload(lanes), first, began, prefill=True)]

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device without waiting for the step in flight."""
        device = self.decoder.device
        return pinned(array, device).to(device, non_blocking=True)

    def _open_lanes(self, lanes: np.ndarray, admitted: list[Sequence], lengths: np.ndarray) -> None:
        state = self._lanes
        params = [s.params for s in admitted]
        state.live[lanes] = True
        state.generation[lanes] += 1
        state.position[lanes] = lengths  # the prefill's token feeds the first decode step here
        state.slot[lanes] = [s.slot.start for s in admitted if s.slot is not None]
        state.max_tokens[lanes] = [p.max_tokens for p in params]
        state.to_launch[lanes] = state.max_tokens[lanes] - 1
        state.seen[lanes] = 0
        state.sent[lanes] = 0
        state.stops_at_eos[lanes] = [not p.ignore_eos for p in params]
        state.report_every[lanes] = [max(1, min(p.report_every, 1 << 40)) for p in params]
        state.greedy[lanes] = [p.greedy for p in params]

    def _launch_decode(self) -> Launched:
        running, state = self._running, self._lanes
        n = len(running)
        buffers = self._inputs[self._input_turn]
        self._input_turn ^= 1
        lanes, positions, slots = (t[:n] for t in buffers)
        lanes.numpy()[:] = running
        np.take(state.position, running, out=positions.numpy())
        np.take(state.slot, running, out=slots.numpy())
        began = _timing_event(self.decoder.device)
        if self.graphs is not None:
            logits, greedy = self.graphs.run(lanes, positions, slots)
        else:
            device = self.decoder.device
            tokens = self.last_token[lanes.to(device)]
            logits = self.decoder.decode(tokens, positions.to(device), slots.to(device), self.cache)
            greedy = None
        if state.greedy[running].all():
            chosen = greedy if greedy is not None else logits.argmax(-1)
        else:
            rows = [self._lane_seq[lane].sampler for lane in running.tolist()]  # type: ignore[union-attr]
            chosen = sample(logits, rows, greedy)
        self.stats.steps += 1
        self.stats.step_rows += n
        self.stats.batch_histogram[n] += 1
        state.position[running] += 1
        left = state.to_launch[running] - 1
        state.to_launch[running] = left
        computed = left <= 0
        if computed.any():  # their last tokens are computed: later work may reuse the slots
            for lane in running[computed].tolist():
                seq = self._lane_seq[lane]
                if seq is not None:
                    self._release_slot(seq)
            self._running = running[~computed]
        device_lanes = lanes.to(self.decoder.device, non_blocking=True)
        return self._launched(running.copy(), device_lanes, chosen, began)

    def _launched(
        self,
        lanes: np.ndarray,
        device_lanes: torch.Tensor,
        chosen: torch.Tensor,
        began: Any = None,
        prefill: bool = False,
    ) -> Launched:
        """Record each lane's new token on the device and start its copy to the host."""
        self.last_token.index_copy_(0, device_lanes.to(self.last_token.device), chosen)
        buffer = self._readback[self._readback_turn]
        self._readback_turn = (self._readback_turn + 1) % len(self._readback)
        host = buffer[: len(lanes)]
        if chosen.is_cuda:
            host.copy_(chosen, non_blocking=True)
            ready = torch.cuda.Event(enable_timing=began is not None)
            ready.record()
        else:
            host.copy_(chosen)
            ready = None
        return Launched(lanes, self._lanes.generation[lanes], host, ready, began, prefill)

    def _read_back(self, record: Launched, updates: list[Update]) -> None:
        """Store a step's tokens in their lanes; updates for first tokens, for requests with
        ``report_every`` tokens unsent and for finished ones (with every token not yet sent)."""
        if record.ready is not None:
            waited = time.perf_counter()
            record.ready.synchronize()
            self.stats.wait_s += time.perf_counter() - waited
            if record.began is not None:
                busy = record.began.elapsed_time(record.ready) / 1e3
                if record.prefill:
                    self.stats.prefill_device_s += busy
                else:
                    self.stats.decode_device_s += busy
        state = self._lanes
        lanes = record.lanes
        valid = state.live[lanes] & (state.generation[lanes] == record.generations)
        tokens = record.tokens.numpy()
        if not valid.all():  # aborted, or finished a step earlier: those tokens were computed in vain
            lanes, tokens = lanes[valid], tokens[valid]
        if not len(lanes):
            return
        seen = state.seen[lanes]
        state.tokens[lanes, seen] = tokens
        seen += 1
        state.seen[lanes] = seen
        self.stats.generated_tokens += len(lanes)
        eos = state.stops_at_eos[lanes] & np.isin(tokens, self._eos) if len(self._eos) else None
        done = seen >= state.max_tokens[lanes]
        if eos is not None:
            done |= eos
        report = done | (seen == 1) | (seen - state.sent[lanes] >= state.report_every[lanes])
        if not report.any():
            return
        append = updates.append
        rows = np.flatnonzero(report).tolist()
        picked = lanes[rows].tolist()
        finishing = done[rows].tolist()
        stopped = eos[rows].tolist() if eos is not None else [False] * len(rows)
        sent, upto = state.sent[picked].tolist(), seen[rows].tolist()
        retired = False
        for lane, was_sent, now, finished, hit_eos in zip(
            picked, sent, upto, finishing, stopped, strict=True
        ):
            seq = self._lane_seq[lane]
            assert seq is not None, "a live lane holds its sequence"
            if hit_eos:  # the EOS token itself is not part of the answer
                append(Update(seq.id, state.tokens[lane, was_sent : now - 1].tolist(), "stop"))
            elif finished:
                append(Update(seq.id, state.tokens[lane, was_sent:now].tolist(), "length"))
            else:
                append(Update(seq.id, state.tokens[lane, was_sent:now].tolist()))
                state.sent[lane] = now
                continue
            self._retire(seq)
            retired = True
        if retired:
            self._drop_retired()

    def _retire(self, seq: Sequence) -> None:
        self._live.pop(seq.id, None)
        self._release_slot(seq)
        if seq.lane >= 0:
            self._lanes.live[seq.lane] = False
            self._lane_seq[seq.lane] = None
            self._free_lanes.append(seq.lane)
            seq.lane = -1

    def _drop_retired(self) -> None:
        running = self._running
        if len(running):
            self._running = running[self._lanes.live[running]]

    def _release_slot(self, seq: Sequence) -> None:
        if seq.slot is not None:
            self.cache.release(seq.slot)
            seq.slot = None

    def _publish_stats(self) -> None:
        self.stats.running = len(self._live) - len(self._waiting)
        self.stats.waiting = len(self._waiting) + self._inbox.qsize()
        self.stats.kv_usage = self.cache.usage()

    def _fail_all(self) -> None:
        """Every request the engine holds gets its final update: those whose results were already
        read first, then an error for everyone else (waiting, running, in flight, mid-prefill)."""
        updates, self._updates = self._updates, []
        finished = {u.request_id for u in updates if u.finish is not None}
        updates += [Update(seq.id, [], "error") for seq in self._live.values() if seq.id not in finished]
        for seq in list(self._live.values()):
            self._retire(seq)
        with self._lock:
            self._pending -= len(self._waiting)
        self._running, self._waiting, self._inflight = np.zeros(0, np.int64), collections.deque(), []
        if updates:
            self.emit(updates)


def _timing_event(device: torch.device) -> Any:
    """A CUDA event recorded now on the current stream (None off the GPU): a step's device time is
    measured from it to the step's ``ready`` event, read once that has completed (no extra sync)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _fatal(exc: Exception) -> bool:
    """A CUDA error other than running out of memory poisons the context: later steps all fail."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    return isinstance(exc, RuntimeError) and ("CUDA error" in str(exc) or "device-side assert" in str(exc))
