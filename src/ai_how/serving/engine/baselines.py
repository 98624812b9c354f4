"""The two engines ours is measured against, behind the same ``TokenEngine`` face as ``core.Engine``.

``NaiveEngine`` is what KServe's huggingfaceserver does without vLLM: one ``generate`` at a time,
first come first served, tokens streamed out as ``generate`` makes them. ``TransformersEngine`` is
transformers' own continuous batching (``init_continuous_batching``), greedy only.

Both answer like ``core.Engine``: the same limits and messages in ``submit``, EOS ends a request
(``finish="stop"``, the EOS token itself not sent) unless ``ignore_eos``, exactly ``max_tokens``
otherwise, and updates leave through ``emit`` from the engine's own thread. Generation settings
come from the request alone: the checkpoint's ``generation_config.json`` defaults (temperature,
top-k, repetition penalty...) are not applied, as ``core.Engine`` does not apply them either.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ai_how.serving.engine.protocol import EngineFull, EngineStats, SamplingParams, Update, check_request

Emit = Callable[[list[Update]], None]

# transformers' paged attention over torch SDPA: runs on CPU and CUDA without flash-attn installed.
PAGED_ATTENTION = "paged|sdpa"
# transformers' paged KV pool: this many tokens per batch lane (as much as our engine's old slot plan
# gave a 2,048-token model, which the baseline figures in docs/performance.md were measured with)
POOL_TOKENS_PER_SEQUENCE = 384


# ---------------------------------------------------------------------- shared by both engines
def max_positions(lm: Any) -> int:
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    return int(config.max_position_embeddings)


def pad_id(lm: Any, eos_ids: set[int]) -> int:
    for source in (lm.generation_config, lm.config):
        value = getattr(source, "pad_token_id", None)
        if isinstance(value, int):
            return value
    return min(eos_ids, default=0)


def request_eos(eos_ids: set[int], params: SamplingParams) -> list[int] | None:
    """The EOS ids a request stops on: none when it ignores EOS."""
    return None if params.ignore_eos or not eos_ids else sorted(eos_ids)


def finish_of(tokens: list[int], eos_ids: set[int], params: SamplingParams) -> tuple[list[int], str]:
    """A request that ended on its own: ``stop`` with its EOS dropped, else ``length``."""
    if tokens and tokens[-1] in eos_ids and not params.ignore_eos:
        return tokens[:-1], "stop"
    return tokens, "length"


# ---------------------------------------------------------------------- naive: one generate at a time
@dataclass
class _Request:
    id: int
    prompt: list[int]
    params: SamplingParams


class _UpdateStreamer(BaseStreamer):  # type: ignore[misc]
    """Sends each new token of the running request through ``emit`` as ``generate`` makes it."""

    def __init__(self, engine: NaiveEngine, request: _Request) -> None:
        self.engine = engine
        self.request = request
        self.prompt_seen = False
        self.tokens = 0
        self.eos = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first call carries the prompt
            self.prompt_seen = True
            return
        if self.eos or self.engine.aborting(self.request.id):
            return
        token = int(value.reshape(-1)[0])
        stats = self.engine.stats
        if self.tokens == 0:
            stats.prefills += 1
        else:
            stats.steps += 1
            stats.batch_histogram[1] += 1
        stats.generated_tokens += 1
        self.tokens += 1
        if token in self.engine.eos_ids and not self.request.params.ignore_eos:
            self.eos = True  # generate stops here; the finish update says "stop"
            return
        self.engine.emit([Update(self.request.id, [token])])

    def end(self) -> None:
        pass


class _AbortCriterion(StoppingCriteria):  # type: ignore[misc]
    """Ends ``generate`` after the current step once its request is aborted or the engine stops."""

    def __init__(self, engine: NaiveEngine, request_id: int) -> None:
        self.engine = engine
        self.request_id = request_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.engine.answer_waiting_aborts()
        done = self.engine.aborting(self.request_id)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class NaiveEngine:
    """One ``lm.generate`` at a time (batch 1), FIFO: KServe's huggingfaceserver without vLLM.

    A worker thread takes the oldest waiting request, runs ``generate`` with a streamer that emits
    each token, and a stopping criterion that ends it on ``abort``. ``max_batch`` is accepted for
    the common constructor and ignored. Seeded sampling forks the global RNG around the call
    (``torch.random.fork_rng`` + ``manual_seed``): ``generate`` takes no per-call generator, and as
    only one call runs at a time, a seed gives the same tokens whatever else is queued.
    """

    def __init__(
        self, lm: Any, eos_ids: set[int], emit: Emit, max_batch: int = 1, max_waiting: int = 4096
    ) -> None:
        from transformers import GenerationConfig

        del max_batch
        self.lm = lm
        self.eos_ids = set(eos_ids)
        self.emit = emit
        self.max_waiting = max_waiting
        self.device = torch.device(lm.device)
        self.stats = EngineStats()
        self._context = max_positions(lm)
        self._pad = pad_id(lm, self.eos_ids)
        # The request's settings alone (see the module docstring): no checkpoint sampling defaults.
        lm.generation_config = GenerationConfig(
            bos_token_id=lm.generation_config.bos_token_id, pad_token_id=self._pad
        )
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._waiting: collections.OrderedDict[int, _Request] = collections.OrderedDict()
        self._aborted: set[int] = set()  # ids waiting or running that were aborted; guarded by _cond
        self._current: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control (any thread)
    @property
    def context_limit(self) -> int:
        return self._context

    def warm_up(self) -> None:
        """One short ``generate`` so the first request does not pay for kernel loading."""
        with torch.inference_mode():
            one = torch.zeros((1, 1), dtype=torch.long, device=self.device)
            self.lm.generate(
                one,
                attention_mask=torch.ones_like(one),
                max_new_tokens=2,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=self._pad,
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ai-how-naive-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, prompt: list[int], params: SamplingParams) -> int:
        """Queue a request; its updates arrive through ``emit``. Raises EngineFull, ValueError."""
        check_request(prompt, params, self.context_limit)
        with self._cond:
            if len(self._waiting) >= self.max_waiting:
                raise EngineFull(f"{len(self._waiting)} requests are waiting")
            request_id = next(self._ids)
            self._waiting[request_id] = _Request(request_id, list(prompt), params)
            self.stats.waiting = len(self._waiting)
            self._cond.notify_all()
        return request_id

    def abort(self, request_id: int) -> None:
        with self._cond:
            if request_id == self._current or request_id in self._waiting:
                self._aborted.add(request_id)
                self._cond.notify_all()

    def aborting(self, request_id: int) -> bool:
        return self._stop.is_set() or request_id in self._aborted

    # ------------------------------------------------------------------ the worker thread
    def answer_waiting_aborts(self) -> None:
        """Finish aborted requests that never ran (also called between steps of a running one)."""
        if not self._aborted:
            return
        with self._cond:
            gone = [i for i in self._aborted if i in self._waiting]
            for request_id in gone:
                del self._waiting[request_id]
                self._aborted.discard(request_id)
            self.stats.waiting = len(self._waiting)
        if gone:
            self.emit([Update(i, [], "abort") for i in gone])

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                request = self._next()
                if request is not None:
                    self._run(request)

    def _next(self) -> _Request | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._waiting) or self._stop.is_set(), timeout=0.5)
        self.answer_waiting_aborts()
        with self._cond:
            if self._stop.is_set() or not self._waiting:
                return None
            _, request = self._waiting.popitem(last=False)
            self._current = request.id
            self.stats.waiting, self.stats.running = len(self._waiting), 1
        return request

    def _run(self, request: _Request) -> None:
        streamer = _UpdateStreamer(self, request)
        self.stats.prompt_tokens += len(request.prompt)
        finish = "error"
        try:
            prompt = torch.tensor([request.prompt], dtype=torch.long, device=self.device)
            with _seeded(request.params, self.device):
                self.lm.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_AbortCriterion(self, request.id)]),
                    **self._settings(request.params),
                )
            if streamer.eos:
                finish = "stop"
            elif streamer.tokens >= request.params.max_tokens:
                finish = "length"
            else:
                finish = "abort"
        except Exception:  # this request failed: report it, keep serving
            traceback.print_exc()
        finally:
            with self._cond:
                self._current = None
                self._aborted.discard(request.id)
                self.stats.running = 0
        self.emit([Update(request.id, [], finish)])

    def _settings(self, params: SamplingParams) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "eos_token_id": request_eos(self.eos_ids, params),
            "pad_token_id": self._pad,
        }
        if params.greedy:
            settings["do_sample"] = False
        else:  # top_k=0: no top-k cut, as core.Engine's sampler has none
            settings.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        return settings


@contextlib.contextmanager
def _seeded(params: SamplingParams, device: torch.device) -> Iterator[None]:
    if params.seed is None or params.greedy:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(params.seed)
        yield


# ---------------------------------------------------------------------- transformers' continuous batching
@dataclass
class _Live:
    id: int
    params: SamplingParams
    prompt_tokens: int
    sent: int = 0  # generated tokens already emitted
    started: bool = False  # has produced output (no longer counted as waiting)


class TransformersEngine:
    """transformers' continuous batching (``lm.init_continuous_batching``), greedy requests only.

    Attention is ``paged|sdpa`` (transformers' paged KV cache over torch SDPA) on CPU and CUDA alike:
    flash-attn is not installed. transformers' defaults otherwise: no compile, and for an attention
    that needs a mask (SDPA) no CUDA graphs and no async batching; prefix sharing on. The paged cache
    holds as many tokens as ``core.Engine``'s KV cache for the same ``max_batch`` and context (the
    same memory), in blocks of 32 tokens.

    The manager samples with one setting for every request (``do_sample`` is manager-wide), so
    ``submit`` refuses ``temperature > 0``: sampled requests go to engine ``ours`` or ``naive``.
    Requests stream (``streaming=True``): a pump thread turns the manager's cumulative outputs into
    per-step increments and emits them; aborts cancel through ``cancel_request``.
    """

    BLOCK_SIZE = 32

    def __init__(
        self, lm: Any, eos_ids: set[int], emit: Emit, max_batch: int = 256, max_waiting: int = 4096
    ) -> None:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        self.lm = lm
        self.eos_ids = set(eos_ids)
        self.emit = emit
        self.max_waiting = max_waiting
        self.stats = EngineStats()
        self._context = max_positions(lm)
        lm.set_attn_implementation(PAGED_ATTENTION)
        # its paged pool: at least one full-context sequence fits
        capacity = max(max_batch * min(self._context, POOL_TOKENS_PER_SEQUENCE), self._context)
        generation = GenerationConfig(
            do_sample=False,
            eos_token_id=sorted(self.eos_ids) or -1,
            pad_token_id=pad_id(lm, self.eos_ids),
        )
        batching = ContinuousBatchingConfig(
            block_size=self.BLOCK_SIZE,
            num_blocks=math.ceil(capacity / self.BLOCK_SIZE),
            max_batch_tokens=8192 if lm.device.type == "cuda" else 1024,
            max_requests_per_batch=max_batch,
        )
        self.manager = lm.init_continuous_batching(
            generation_config=generation, continuous_batching_config=batching
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}  # guarded by _lock
        self._pending = 0  # submitted, no output yet; guarded by _lock
        self._aborts: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None

    # ------------------------------------------------------------------ control (any thread)
    @property
    def context_limit(self) -> int:
        return self._context

    def warm_up(self) -> None:
        """Allocate the paged cache (and capture CUDA graphs, when transformers uses them)."""
        self.manager.warmup()

    def start(self) -> None:
        self.manager.start()
        self._pump = threading.Thread(target=self._pump_loop, name="ai-how-transformers-pump", daemon=True)
        self._pump.start()

    def stop(self) -> None:
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=10, hard_stop=True)
        self._stop.set()
        if self._pump is not None:
            self._pump.join(timeout=10)

    def submit(self, prompt: list[int], params: SamplingParams) -> int:
        """Queue a request; its updates arrive through ``emit``. Raises EngineFull, ValueError."""
        check_request(prompt, params, self.context_limit)
        if not params.greedy:
            raise ValueError(
                f"temperature {params.temperature}: engine 'transformers' serves greedy requests only "
                "(temperature 0); use engine 'ours' or 'naive' to sample"
            )
        with self._lock:
            if self._pending >= self.max_waiting:
                raise EngineFull(f"{self._pending} requests are waiting")
            self._pending += 1
            request_id = next(self._ids)
            key = _key(request_id)
            self._live[key] = _Live(request_id, params, len(prompt))
        added = self.manager.add_request(
            list(prompt),
            request_id=key,
            max_new_tokens=params.max_tokens,
            streaming=True,
            eos_token_id=request_eos(self.eos_ids, params) or -1,
        )
        if added is None:  # the manager is stopping or its loop died
            with self._lock:
                self._live.pop(key, None)
                self._pending -= 1
            error = getattr(self.manager, "fatal_error", None)
            raise RuntimeError(f"transformers' continuous batching is not running ({error or 'stopped'})")
        return request_id

    def abort(self, request_id: int) -> None:
        with self._lock:
            live = _key(request_id) in self._live
        if live:  # the manager warns about cancelling a request it no longer has
            self.manager.cancel_request(_key(request_id))
            self._aborts.put(request_id)

    # ------------------------------------------------------------------ the pump thread
    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            updates = self._answer_aborts()
            output = self.manager.get_result(timeout=0.05)
            while output is not None:
                self._accept(output, updates)
                output = self.manager.get_result(timeout=0)
            if updates:
                self.emit(updates)
            self._publish_stats()

    def _answer_aborts(self) -> list[Update]:
        updates = []
        with contextlib.suppress(queue.Empty):
            while True:
                request_id = self._aborts.get_nowait()
                with self._lock:
                    live = self._live.pop(_key(request_id), None)
                    if live is not None and not live.started:
                        self._pending -= 1
                if live is not None:
                    updates.append(Update(request_id, [], "abort"))
        return updates

    def _accept(self, output: Any, updates: list[Update]) -> None:
        """One manager output (all tokens so far) -> the increment since the last one."""
        with self._lock:
            live = self._live.get(output.request_id)
            if live is None:  # aborted: later outputs are dropped
                return
            if not live.started:
                live.started = True
                self._pending -= 1
                self.stats.prompt_tokens += live.prompt_tokens
            finished = output.error is not None or output.is_finished()
            if finished:
                del self._live[output.request_id]
        generated = list(output.generated_tokens)
        tokens = generated[live.sent :]
        live.sent = len(generated)
        self.stats.generated_tokens += len(tokens)
        finish = None
        if output.error is not None:
            finish = "error"
        elif finished:
            tokens, finish = finish_of(tokens, self.eos_ids, live.params)
        updates.append(Update(live.id, tokens, finish))

    def _publish_stats(self) -> None:
        with self._lock:
            self.stats.waiting = self._pending
            self.stats.running = len(self._live) - self._pending
        self.stats.steps = int(getattr(self.manager, "current_batch", 0))


def _key(request_id: int) -> str:
    return f"ai-how-{request_id}"
