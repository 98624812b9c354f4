"""What a benchmark run is made of: load points and one record per request (plain data, no I/O), and
the records packed as columns of numbers for the trip from a load worker process to the parent."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

Outcome = Literal["ok", "error", "throttled", "timeout", "dropped"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


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


@dataclass(frozen=True)
class PackedRecords:
    """Request records as columns, cheap to pickle (``pack``/``unpack``): a streamed run's ITL gaps are
    one float array, not a Python list per request. None is -1 in the integer columns and NaN in the
    float ones; ``itl`` holds every record's gaps back to back, record i's ending at ``itl_ends[i]``."""

    start: array[float]
    end: array[float]
    outcome: bytes  # index into OUTCOMES
    status: array[int]
    ttft: array[float]
    output_tokens: array[int]
    retry_after: array[float]
    itl: array[float]
    itl_ends: array[int]
    details: dict[int, str]  # record index -> detail, for the records that have one

    def __len__(self) -> int:
        return len(self.start)


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


def pack(records: Iterable[RequestRecord]) -> PackedRecords:
    """``records`` as columns; ``unpack`` gives them back equal."""
    start, end, ttft, retry, itl = (array("d") for _ in range(5))
    status, tokens, itl_ends = (array("q") for _ in range(3))
    outcome = bytearray()
    details: dict[int, str] = {}
    for i, r in enumerate(records):
        start.append(r.start)
        end.append(r.end)
        outcome.append(OUTCOMES.index(r.outcome))
        status.append(-1 if r.status is None else r.status)
        ttft.append(_number(r.ttft))
        tokens.append(-1 if r.output_tokens is None else r.output_tokens)
        retry.append(_number(r.retry_after))
        itl.extend(r.itl)
        itl_ends.append(len(itl))
        if r.detail is not None:
            details[i] = r.detail
    return PackedRecords(start, end, bytes(outcome), status, ttft, tokens, retry, itl, itl_ends, details)


def unpack(packed: PackedRecords) -> list[RequestRecord]:
    """The records ``pack`` was given, in their order."""
    records = []
    begin = 0
    for i in range(len(packed)):
        stop = packed.itl_ends[i]
        records.append(
            RequestRecord(
                packed.start[i],
                packed.end[i],
                OUTCOMES[packed.outcome[i]],
                status=None if packed.status[i] < 0 else packed.status[i],
                ttft=_optional(packed.ttft[i]),
                itl=packed.itl[begin:stop].tolist(),
                output_tokens=None if packed.output_tokens[i] < 0 else packed.output_tokens[i],
                retry_after=_optional(packed.retry_after[i]),
                detail=packed.details.get(i),
            )
        )
        begin = stop
    return records
