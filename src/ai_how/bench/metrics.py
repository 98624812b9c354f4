"""Latency and throughput of one load point from its request records (pure functions, no I/O).

Which requests count: those that started inside the measured window (after the warm-up, before the
end of ``--duration``), wherever they ended. Throughput is successes / wall time, the wall time
running from the window's start to the end of the last request that finished (vLLM's definition
for a bounded run), not successes / summed latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ai_how.bench.records import RequestRecord

# Below this share of the scheduled arrivals actually sent, the load generator itself was the limit.
CLIENT_BOUND_SHARE = 0.9
_DETAILS_KEPT = 5


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolated linearly between ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return _ranked(ordered, q)


def _ranked(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution_ms(values: Iterable[float]) -> dict[str, float] | None:
    """Mean, P50, P95 and P99 in milliseconds of values in seconds (None when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return None
    stats = {
        "mean": math.fsum(ordered) / len(ordered),
        "p50": _ranked(ordered, 50),
        "p95": _ranked(ordered, 95),
        "p99": _ranked(ordered, 99),
    }
    return {name: round(value * 1000, 3) for name, value in stats.items()}


def tpot(record: RequestRecord) -> float | None:
    """Time per output token after the first: (E2E - TTFT) / (output tokens - 1); None without TTFT or 2 tokens."""
    if record.ttft is None or record.output_tokens is None or record.output_tokens < 2:
        return None
    return (record.latency - record.ttft) / (record.output_tokens - 1)


def measured(records: Iterable[RequestRecord], start: float, stop: float) -> list[RequestRecord]:
    """The records of requests that started inside the window [start, stop)."""
    return [r for r in records if start <= r.start < stop]


def summarize(
    records: Iterable[RequestRecord], *, start: float, stop: float, scheduled: int | None = None
) -> dict[str, Any]:
    """The load point's figures (JSON-ready) from all its records; ``start``/``stop`` bound the measured window.

    ``scheduled`` (open loop): the arrivals the Poisson schedule put in the window; when fewer than
    90 % of them were sent, the point is ``client_bound``.
    """
    window = measured(records, start, stop)
    by = {
        kind: [r for r in window if r.outcome == kind]
        for kind in ("ok", "error", "throttled", "timeout", "dropped")
    }
    ok = by["ok"]
    issued = len(window)
    finished = [r.end for r in window if r.outcome in ("ok", "error", "throttled")]
    wall = max(max(finished, default=stop), stop) - start if window else stop - start
    tokens = [r.output_tokens for r in ok if r.output_tokens is not None]
    duration = stop - start
    return {
        "issued": issued,
        "ok": len(ok),
        "errors": len(by["error"]),
        "throttled": len(by["throttled"]),
        "timeouts": len(by["timeout"]),
        "dropped": len(by["dropped"]),
        "error_rate": round(len(by["error"]) / issued, 6) if issued else 0.0,
        "throttled_rate": round(len(by["throttled"]) / issued, 6) if issued else 0.0,
        "send_rps": round(issued / duration, 3) if duration > 0 else None,
        "scheduled_rps": round(scheduled / duration, 3) if scheduled is not None and duration > 0 else None,
        "client_bound": scheduled is not None and issued < CLIENT_BOUND_SHARE * scheduled,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "output_tokens_per_s": round(sum(tokens) / wall, 3) if tokens and wall > 0 else None,
        "latency_ms": distribution_ms(r.latency for r in ok),
        "ttft_ms": distribution_ms(r.ttft for r in ok if r.ttft is not None),
        "tpot_ms": distribution_ms(t for t in map(tpot, ok) if t is not None),
        "itl_ms": distribution_ms(gap for r in ok for gap in r.itl),
        "failures": failure_details(window),
    }


def failure_details(records: Iterable[RequestRecord]) -> list[str]:
    """The first few distinct reasons requests failed (errors, timeouts, drops), for the report."""
    seen: list[str] = []
    for r in records:
        if r.outcome in ("error", "timeout", "dropped") and r.detail and r.detail not in seen:
            seen.append(r.detail)
            if len(seen) == _DETAILS_KEPT:
                break
    return seen


def ratios(base: dict[str, Any], other: dict[str, Any]) -> dict[str, float | None]:
    """``other`` relative to ``base`` at one load point: throughput ratio and P95 latency ratio."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    p95 = [s["latency_ms"]["p95"] if s.get("latency_ms") else None for s in (base, other)]
    return {
        "throughput_ratio": ratio(other.get("requests_per_s"), base.get("requests_per_s")),
        "p95_ratio": ratio(p95[1], p95[0]),
    }
