"""What a benchmark run is made of: load points and one record per request (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "error", "throttled", "timeout", "dropped"]


@dataclass(frozen=True)
class LoadPoint:
    """One load level: ``concurrency`` workers (closed loop) or Poisson arrivals at ``rate`` req/s (open loop)."""

    mode: Literal["concurrency", "rate"]
    value: float

    @property
    def label(self) -> str:
        number = f"{self.value:g}"
        return f"c={number}" if self.mode == "concurrency" else f"r={number}/s"


@dataclass
class RequestRecord:
    """One request. Times are seconds after the load point began (its warm-up included).

    ``throttled`` is a 429 or 503 answer (not an error); ``timeout`` a request still in flight when the
    grace period after the measured window ran out (or an HTTP timeout); ``dropped`` an open-loop
    arrival not sent because the in-flight cap was reached.
    """

    start: float
    end: float
    outcome: Outcome
    status: int | None = None
    ttft: float | None = None  # streamed responses only: time to the first content event
    itl: list[float] = field(default_factory=list)  # gaps between content events
    output_tokens: int | None = None  # usage.completion_tokens, else content events; None: not an LLM
    retry_after: float | None = None  # seconds, from a throttled answer's Retry-After
    detail: str | None = None  # why it failed

    @property
    def latency(self) -> float:
        return self.end - self.start
