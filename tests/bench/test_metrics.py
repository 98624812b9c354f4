"""Load-point figures from hand-made request records: percentiles, TPOT, throughput, 429/503 apart from
errors, and the merge of the records of several load processes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ai_how.bench.loadgen import arrivals, retry_after_s
from ai_how.bench.metrics import distribution_ms, percentile, ratios, summarize, tpot
from ai_how.bench.records import LoadPoint, RequestRecord, pack, unpack
from ai_how.bench.workers import WorkerResult, merge, shares, spread


def ok(start: float, latency: float, **fields: object) -> RequestRecord:
    return RequestRecord(start, start + latency, "ok", status=200, **fields)  # type: ignore[arg-type]


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    hundred = [float(v) for v in range(1, 101)]
    random.Random(1).shuffle(hundred)
    assert percentile(hundred, 99) == pytest.approx(99.01)


def test_distribution_is_in_milliseconds() -> None:
    assert distribution_ms([0.010, 0.020, 0.030]) == {"mean": 20.0, "p50": 20.0, "p95": 29.0, "p99": 29.8}
    assert distribution_ms([]) is None


def test_tpot_is_time_after_the_first_token_per_further_token() -> None:
    assert tpot(ok(0.0, 1.0, ttft=0.2, output_tokens=5)) == pytest.approx(0.2)  # (1.0 - 0.2) / 4
    assert tpot(ok(0.0, 1.0, ttft=0.2, output_tokens=1)) is None  # one token: no gap to divide
    assert tpot(ok(0.0, 1.0, output_tokens=64)) is None  # not streamed: no TTFT


def test_only_requests_started_in_the_measured_window_count() -> None:
    records = [
        ok(0.5, 0.1),  # warm-up
        ok(1.0, 0.2),
        ok(1.5, 0.4),
        ok(2.9, 0.6),  # started in the window, ended after it: counted
        ok(3.0, 0.1),  # started at the window's end: not counted
    ]
    summary = summarize(records, start=1.0, stop=3.0)
    assert summary["issued"] == 3 and summary["ok"] == 3
    assert summary["latency_ms"] == distribution_ms([0.2, 0.4, 0.6])
    assert summary["wall_s"] == pytest.approx(2.5)  # window start -> the last counted request's end (3.5)
    assert summary["requests_per_s"] == pytest.approx(3 / 2.5)
    assert summary["send_rps"] == pytest.approx(1.5)


def test_throughput_uses_the_window_when_requests_end_early() -> None:
    summary = summarize([ok(0.0, 0.1), ok(1.0, 0.1)], start=0.0, stop=10.0)
    assert summary["wall_s"] == 10.0 and summary["requests_per_s"] == pytest.approx(0.2)


def test_throttled_answers_are_counted_apart_from_errors() -> None:
    records = [
        ok(0.0, 0.1),
        ok(0.1, 0.1),
        RequestRecord(0.2, 0.21, "throttled", status=429, retry_after=1.0),
        RequestRecord(0.3, 0.31, "throttled", status=503),
        RequestRecord(0.4, 0.5, "error", status=500, detail="HTTP 500: boom"),
        RequestRecord(0.5, 30.5, "timeout", detail="still in flight after the grace period"),
        RequestRecord(0.6, 0.6, "dropped", detail="10 requests already in flight"),
        RequestRecord(0.7, 0.8, "error", status=500, detail="HTTP 500: boom"),
    ]
    s = summarize(records, start=0.0, stop=1.0)
    assert (s["issued"], s["ok"], s["errors"], s["throttled"], s["timeouts"], s["dropped"]) == (
        8,
        2,
        2,
        2,
        1,
        1,
    )
    assert s["error_rate"] == pytest.approx(2 / 8) and s["throttled_rate"] == pytest.approx(2 / 8)
    assert s["latency_ms"] == distribution_ms([0.1, 0.1])  # failures never enter the latencies
    assert s["wall_s"] == pytest.approx(1.0)  # the timed-out request does not stretch the wall time
    assert s["failures"] == [
        "HTTP 500: boom",
        "still in flight after the grace period",
        "10 requests already in flight",
    ]


def test_streamed_llm_figures() -> None:
    records = [
        ok(0.0, 1.0, ttft=0.1, itl=[0.3, 0.3, 0.3], output_tokens=4),
        ok(0.5, 0.8, ttft=0.2, itl=[0.2, 0.2, 0.2], output_tokens=4),
    ]
    s = summarize(records, start=0.0, stop=1.0)
    assert s["ttft_ms"]["p50"] == pytest.approx(150.0)
    assert s["tpot_ms"]["mean"] == pytest.approx(250.0)  # (0.9/3 + 0.6/3) / 2
    assert s["itl_ms"]["p50"] == pytest.approx(250.0)  # six raw gaps: three of 0.2 s, three of 0.3 s
    assert s["output_tokens_per_s"] == pytest.approx(8 / 1.3, abs=1e-3)  # wall: 0 -> 1.3 s


def test_unstreamed_runs_report_no_ttft_and_classifiers_no_tokens() -> None:
    s = summarize([ok(0.0, 0.2, output_tokens=64)], start=0.0, stop=1.0)
    assert s["ttft_ms"] is None and s["tpot_ms"] is None and s["itl_ms"] is None
    assert s["output_tokens_per_s"] == pytest.approx(64.0)
    assert summarize([ok(0.0, 0.2)], start=0.0, stop=1.0)["output_tokens_per_s"] is None


def test_a_send_rate_below_90_percent_of_the_schedule_is_client_bound() -> None:
    records = [ok(i / 100, 0.01) for i in range(100)]  # 100 sent in 1 s
    assert not summarize(records, start=0.0, stop=1.0, scheduled=105)["client_bound"]
    bound = summarize(records, start=0.0, stop=1.0, scheduled=200)
    assert bound["client_bound"] and bound["scheduled_rps"] == 200.0 and bound["send_rps"] == 100.0
    assert not summarize(records, start=0.0, stop=1.0)["client_bound"]  # closed loop: no schedule


def test_compare_ratios_are_second_over_first() -> None:
    base = summarize([ok(0.0, 0.1), ok(0.5, 0.3)], start=0.0, stop=1.0)
    other = summarize([ok(0.0, 0.1), ok(0.2, 0.1), ok(0.4, 0.2), ok(0.6, 0.2)], start=0.0, stop=1.0)
    r = ratios(base, other)
    assert r["throughput_ratio"] == pytest.approx(2.0)
    assert r["p95_ratio"] == pytest.approx(other["latency_ms"]["p95"] / base["latency_ms"]["p95"], abs=1e-3)
    assert ratios(base, summarize([], start=0.0, stop=1.0)) == {"throughput_ratio": 0.0, "p95_ratio": None}


def test_retry_after_seconds_or_http_date() -> None:
    assert retry_after_s("2") == 2.0 and retry_after_s("0.5") == 0.5
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_s(later) or 0) <= 30


def test_poisson_arrivals_are_seeded_and_at_the_rate() -> None:
    times = arrivals(200.0, 50.0, seed=3)
    assert times == arrivals(200.0, 50.0, seed=3) and times != arrivals(200.0, 50.0, seed=4)
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 50.0
    assert len(times) == pytest.approx(10_000, rel=0.05)


def test_point_labels() -> None:
    assert LoadPoint("concurrency", 8).label == "c=8"
    assert LoadPoint("rate", 2.5).label == "r=2.5/s"


def test_packed_records_come_back_equal() -> None:
    records = [
        ok(0.0, 1.0, ttft=0.1, itl=[0.3, 0.3, 0.3], output_tokens=4),
        ok(0.5, 0.25, output_tokens=0),
        ok(0.6, 0.2),
        RequestRecord(0.7, 0.71, "throttled", status=429, retry_after=0.0),
        RequestRecord(0.8, 30.8, "timeout", detail="still in flight after the grace period"),
        RequestRecord(0.9, 0.9, "dropped", detail="10 requests already in flight"),
        RequestRecord(1.0, 1.1, "error", detail="ConnectError: refused"),
    ]
    assert unpack(pack(records)) == records
    assert unpack(pack([])) == []


def worker(records: list[RequestRecord], scheduled: int | None, connections: int) -> WorkerResult:
    """What a load process sends back, made by hand: its records and its own count of the measured ones."""
    issued = sum(1 for r in records if 1.0 <= r.start < 3.0)
    return WorkerResult(pack(records), scheduled, connections, issued)


def test_merged_processes_give_the_figures_of_all_their_records() -> None:
    first = [ok(0.5, 0.1), ok(1.0, 0.1, ttft=0.05, itl=[0.05], output_tokens=2), ok(2.0, 0.4)]
    second = [
        ok(1.2, 0.2, ttft=0.1, itl=[0.1], output_tokens=2),
        RequestRecord(1.5, 1.6, "error", status=500, detail="HTTP 500: boom"),
        ok(2.9, 0.9),  # ends after the window: counted, stretches the wall time
        ok(3.1, 0.1),  # started after the window
    ]
    run = merge(LoadPoint("rate", 40), [worker(first, 40, 3), worker(second, 41, 2)], 100.0, (1.0, 3.0))
    assert run.point == LoadPoint("rate", 40) and run.t0 == 100.0 and run.window == (1.0, 3.0)
    assert run.records == first + second and run.scheduled == 81 and run.connections == 5
    assert run.workers == [{"issued": 2, "connections": 3}, {"issued": 3, "connections": 2}]
    merged = summarize(run.records, start=1.0, stop=3.0, scheduled=run.scheduled)
    assert merged == summarize(first + second, start=1.0, stop=3.0, scheduled=81)
    assert merged["issued"] == sum(w["issued"] for w in run.workers) == 5
    assert merged["latency_ms"] == distribution_ms([0.1, 0.4, 0.2, 0.9])  # percentiles over both
    assert merged["ttft_ms"] == distribution_ms([0.05, 0.1])
    assert merged["wall_s"] == pytest.approx(2.8) and merged["requests_per_s"] == pytest.approx(
        4 / 2.8, abs=1e-3
    )
    assert merged["send_rps"] == 2.5 and merged["client_bound"]  # 5 sent of 81 scheduled
    closed = merge(
        LoadPoint("concurrency", 3), [worker(first, None, 2), worker(second, None, 1)], 0.0, (1.0, 3.0)
    )
    assert closed.scheduled is None


def test_a_point_is_shared_out_over_the_processes() -> None:
    assert spread(5, 2) == [3, 2] and spread(4, 4) == [1, 1, 1, 1] and spread(1, 3) == [1, 0, 0]
    assert shares(LoadPoint("rate", 1000), 10_000, 4) == [(LoadPoint("rate", 250), 2500)] * 4
    assert shares(LoadPoint("concurrency", 5), 10, 2) == [
        (LoadPoint("concurrency", 3), 5),
        (LoadPoint("concurrency", 2), 5),
    ]
    assert shares(LoadPoint("concurrency", 1), 10, 4) == [
        (LoadPoint("concurrency", 1), 3)
    ]  # the others sit out
    assert [cap for _, cap in shares(LoadPoint("rate", 8), 2, 4)] == [
        1,
        1,
        1,
        1,
    ]  # at least one in flight each
