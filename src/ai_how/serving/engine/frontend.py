"""The async face of a token engine: text out, stop strings, streaming, cancellation, metrics.

A token engine (ours, the naive one, transformers' continuous batching) runs in its own thread
and reports token ids through one ``emit`` call per step. ``AsyncLLM`` turns those into per-request
text chunks on the event loop: incremental detokenising, stop strings (held back so no part of a
stop string is ever streamed), and an abort sent to the engine when the consumer goes away (client
disconnect, cancelled task). Whatever is queued when a consumer reads becomes one chunk, so
streaming coalesces tokens by itself under load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ai_how.serving.engine.protocol import EngineFull, EngineStats, SamplingParams, Update

__all__ = ["AsyncLLM", "Chunk", "EngineFull", "TokenEngine"]


class TokenEngine(Protocol):
    stats: EngineStats

    @property
    def context_limit(self) -> int: ...

    def submit(self, prompt: list[int], params: SamplingParams) -> int: ...

    def abort(self, request_id: int) -> None: ...

    def warm_up(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Chunk:
    text: str
    tokens: int  # tokens this chunk covers
    token_ids: list[int] = field(default_factory=list)
    finish: str | None = None  # "stop" | "length" | "abort" | "error"


class Detokenizer:
    """Incremental decoding that never splits a multi-byte character (holds back U+FFFD tails)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, tokens: list[int]) -> str:
        self.ids.extend(tokens)
        before, after = self._window()
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is held back at the end (an incomplete character decodes as U+FFFD)."""
        before, after = self._window()
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]

    def _window(self) -> tuple[str, str]:
        """The text of the ids already read and of all ids, both from ``prefix`` on."""
        decode = self.tokenizer.decode
        before = str(decode(self.ids[self.prefix : self.read], skip_special_tokens=True))
        return before, str(decode(self.ids[self.prefix :], skip_special_tokens=True))


class _Stream:
    """Tokens the engine produced for one request, not yet read; the reader wakes on its first
    token, every ``interval`` tokens after, and at the end (a non-streamed answer: only the end)."""

    __slots__ = ("event", "finish", "first_at", "interval", "started", "tokens")

    def __init__(self, interval: int) -> None:
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.interval = interval
        self.started = False
        self.first_at = 0.0  # when the first token arrived (time to first token, even unread)
        self.event = asyncio.Event()

    def add(self, update: Update) -> None:
        if update.tokens and not self.first_at:
            self.first_at = time.perf_counter()
        self.tokens.extend(update.tokens)
        if update.finish is not None:
            self.finish = update.finish
        if self.finish is not None or not self.started or len(self.tokens) >= self.interval:
            self.started = self.started or bool(self.tokens)
            self.event.set()

    def take(self) -> tuple[list[int], str | None]:
        tokens, self.tokens = self.tokens, []
        self.event.clear()
        return tokens, self.finish


class AsyncLLM:
    """``generate(prompt_ids, params)`` yields ``Chunk``s; the last one has ``finish`` set."""

    def __init__(
        self,
        engine_factory: Any,
        tokenizer: Any,
        model_name: str,
        metrics: Any = None,
        stream_interval: int = 1,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)  # the loader raises it to the model's embedding rows
        self.stream_interval = stream_interval
        self.model_name = model_name
        self.metrics = metrics
        self._streams: dict[int, _Stream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.engine: TokenEngine = engine_factory(self._emit)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()

    @property
    def context_limit(self) -> int:
        return self.engine.context_limit

    # ------------------------------------------------------------------ engine thread -> loop
    def _emit(self, updates: list[Update]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch, updates)

    def _dispatch(self, updates: list[Update]) -> None:
        for update in updates:
            stream = self._streams.get(update.request_id)
            if stream is not None:
                stream.add(update)

    # ------------------------------------------------------------------ requests
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def generate(
        self, prompt: list[int], params: SamplingParams, interval: int | None = None
    ) -> AsyncIterator[Chunk]:
        """Chunks of the answer: the first token alone, then every ``interval`` tokens (default
        ``stream_interval``), then the rest with ``finish``. Raises EngineFull (queue full) or
        ValueError (limits) before the first chunk."""
        self._loop = asyncio.get_running_loop()
        started = time.perf_counter()
        interval = interval or self.stream_interval
        params = dataclasses.replace(params, report_every=interval)
        request_id = self.engine.submit(prompt, params)
        stream = _Stream(interval)
        self._streams[request_id] = stream
        detok = Detokenizer(self.tokenizer)
        stops = [s for s in params.stop if s]
        hold = max((len(s) for s in stops), default=1) - 1
        text, sent = "", 0
        produced, first_at, finished = 0, 0.0, False
        try:
            while True:
                await stream.event.wait()
                new, finish = stream.take()
                if new and not first_at:
                    first_at = stream.first_at  # set when the token arrived, not when read
                    self._observe("ttft", first_at - started)
                produced += len(new)
                text += detok.add(new)
                if finish is not None:
                    text += detok.flush()
                if stops:
                    cut = _find_stop(text, stops, max(0, sent - hold))
                    if cut is not None:
                        text, finish = text[:cut], "stop"
                        self.engine.abort(request_id)
                        finished = True  # the engine's own abort update is ignored
                if finish is not None:
                    finished = True
                    self._finish(started, first_at, produced)
                    yield Chunk(text[sent:], len(new), new, finish)
                    return
                visible = len(text) - hold if stops else len(text)
                if visible > sent or new:
                    chunk = text[sent:visible] if visible > sent else ""
                    sent = max(sent, visible)
                    yield Chunk(chunk, len(new), new)
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.engine.abort(request_id)

    def _finish(self, started: float, first_at: float, produced: int) -> None:
        if self.metrics is None:
            return
        if produced > 1 and first_at:
            self._observe("tpot", (time.perf_counter() - first_at) / (produced - 1))

    def _observe(self, what: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(what, self.model_name, seconds)

    async def complete(self, prompt: list[int], params: SamplingParams) -> Completion:
        """The whole answer at once (the same chunks a stream would carry, joined)."""
        parts: list[str] = []
        ids: list[int] = []
        finish = "length"
        # Read once at the end; with stop strings every few tokens, so a stop ends the work early.
        # Without them the engine sends the first token and then the rest at the end, not every step.
        interval = 8 if params.stop else 1 << 30
        async for chunk in self.generate(prompt, params, interval=interval):
            parts.append(chunk.text)
            ids.extend(chunk.token_ids)
            finish = chunk.finish or finish
        return Completion("".join(parts), ids, finish)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish: str


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None
