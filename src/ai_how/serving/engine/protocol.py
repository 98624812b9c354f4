"""What a request and its answers are, shared by every engine, the engine process and the server.

No torch here: the HTTP processes import this (and never torch) when the engine runs in its own
process, which keeps seconds off each one's start and hundreds of MB off its memory.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # The engine reports the first token, then every ``report_every`` tokens, then the rest at the
    # end: 1 for a token-by-token stream; the front end sets its coalescing interval (huge for an
    # answer read once), so the engine does not send what nobody reads yet.
    report_every: int = 1

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(slots=True)
class Update:
    """New tokens of one request since the last update; ``finish`` set on its last update."""

    request_id: int
    tokens: list[int]
    finish: str | None = None  # "stop" | "length" | "abort" | "error"


# EngineStats' counters, in the order the engine process sends them to its HTTP processes
COUNTERS = (
    "prompt_tokens",
    "generated_tokens",
    "steps",
    "prefills",
    "step_rows",
    "decode_device_s",
    "prefill_device_s",
    "wait_s",
)


@dataclass
class EngineStats:
    """What /metrics reports; read without a lock (single writer, torn reads are harmless)."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    steps: int = 0  # decode steps
    prefills: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    step_rows: int = 0  # rows over all decode steps: step_rows / steps is the mean batch
    # device time of decode steps and of prefills: from an event queued before each to its ready
    # event (gaps the host leaves in between count too); 0 on a CPU
    decode_device_s: float = 0.0
    prefill_device_s: float = 0.0
    wait_s: float = 0.0  # the engine thread's time waiting for the device to finish a step
    batch_histogram: collections.Counter[int] = field(default_factory=collections.Counter)

    def counters(self) -> tuple[float, ...]:
        """The counters, in ``COUNTERS`` order (what the engine process sends with every step)."""
        return tuple(getattr(self, name) for name in COUNTERS)

    def merge_counters(self, values: Sequence[float]) -> None:
        """Take the engine's counters as sent; never backwards (two threads of the engine process
        may send them out of order). ValueError when they are not ``COUNTERS``' length."""
        if len(values) != len(COUNTERS):
            raise ValueError(f"{len(values)} engine counters sent, {len(COUNTERS)} expected")
        for name, value in zip(COUNTERS, values, strict=True):
            setattr(self, name, max(getattr(self, name), value))


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
