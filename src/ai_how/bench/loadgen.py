"""The load loops: closed (N workers, each sends its next request when the previous one ends) and open
(Poisson arrivals at R req/s, in-flight requests capped), on one event loop (uvloop's when importable,
``ai_how.eventloop``). Every request leaves one ``RequestRecord``; the figures are computed from them
afterwards (``bench.metrics``). ``bench.workers`` runs a point in several processes of these loops.

Connections: one ``aiohttp.ClientSession`` per connection (HTTP/1.1, a connector of one kept-alive
connection), as many as requests in flight, each reused. The client's CPU per request is what bounds
a load generator sharing a small machine with the server: on the 2-core CI machine kind, digits V1 at
concurrency 8, aiohttp (as vLLM's own benchmark uses) costs ~0.45 ms of CPU per request where httpx
cost ~1.9 ms, and the same server answered 764 req/s instead of 549. (With httpx, one client per
connection was already needed: httpcore's pool rescans all its connections for every request,
encode/httpx#3215.)

A load point runs ``warmup + duration`` seconds; issuing stops at the end, requests still in flight
get ``grace`` seconds more and then count as timeouts.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp

from ai_how.bench import payloads
from ai_how.bench.records import LoadPoint, RequestRecord
from ai_how.bench.sse import SSEDecoder, StreamTiming
from ai_how.errors import AiHowError
from ai_how.eventloop import run_loop

HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
THROTTLED = (429, 503)
KEEPALIVE_S = 4.0
_CONNECT_BACKOFF_S = 0.05  # a closed-loop worker whose connection failed waits this long: no busy loop

clock = time.perf_counter


@dataclass(frozen=True)
class Target:
    """Where the load goes and what each request asks for."""

    url: str
    model: str
    protocol: str
    stream: bool = False
    input_tokens: int = 32
    output_tokens: int = 64
    seed: int = 0

    @property
    def origin(self) -> str:
        return payloads.split_url(self.url)[0]

    @property
    def path(self) -> str:
        return payloads.route(self.protocol, self.model, payloads.split_url(self.url)[1])

    @property
    def is_llm(self) -> bool:
        return self.protocol in payloads.OPENAI_PROTOCOLS


@dataclass
class PointRun:
    """The records of one load point and its window, in seconds after the point's start ``t0`` (a clock() value)."""

    point: LoadPoint
    records: list[RequestRecord]
    t0: float
    window: tuple[float, float]  # measured window: (warm-up end, end of issuing)
    scheduled: int | None = None  # open loop: arrivals the schedule put in the window
    connections: int = 0  # connections opened
    workers: list[dict[str, int]] | None = None  # per load process: {"issued", "connections"}; None: this one


class RunPoint(Protocol):
    """Runs one load point to the end and returns its records: ``run_here`` or ``workers.LoadProcesses``."""

    def __call__(
        self,
        target: Target,
        point: LoadPoint,
        *,
        duration_s: float,
        warmup_s: float,
        grace_s: float,
        max_in_flight: int,
    ) -> PointRun: ...


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _completion_tokens(content: bytes) -> int | None:
    try:
        usage = json.loads(content).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else None


class Connections:
    """Single-connection clients to ``target``: one per request in flight, idle ones reused (kept alive)."""

    def __init__(self, target: Target, timeout: aiohttp.ClientTimeout | None = None) -> None:
        self._origin = target.origin
        # no total: the grace period bounds requests
        self._timeout = timeout or aiohttp.ClientTimeout(total=None, sock_connect=10.0)
        self._ssl = ssl.create_default_context()  # loaded once: a context per client costs ~30 ms
        self._idle: list[aiohttp.ClientSession] = []
        self._all: list[aiohttp.ClientSession] = []

    def take(self) -> aiohttp.ClientSession:
        if self._idle:
            return self._idle.pop()
        client = aiohttp.ClientSession(
            base_url=self._origin,
            # idle connections closed before a server's own keep-alive timeout (uvicorn's default is 5 s):
            # a request sent on a connection the server is closing fails, and a POST is not retried
            connector=aiohttp.TCPConnector(limit=1, ssl=self._ssl, keepalive_timeout=KEEPALIVE_S),
            timeout=self._timeout,
        )
        self._all.append(client)
        return client

    def give(self, client: aiohttp.ClientSession) -> None:
        self._idle.append(client)

    @property
    def opened(self) -> int:
        return len(self._all)

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(client.close() for client in self._all), return_exceptions=True)


@dataclass
class Sender:
    """Sends the target's requests, cycling through pre-encoded bodies; appends a record for each."""

    target: Target
    t0: float
    records: list[RequestRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.target
        self._path = t.path
        self._bodies = payloads.bodies(
            t.protocol,
            t.model,
            stream=t.stream,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            seed=t.seed,
        )
        self._next = 0

    async def send(self, client: aiohttp.ClientSession) -> RequestRecord:
        body = self._bodies[self._next % len(self._bodies)]
        self._next += 1
        start = clock()
        try:
            if self.target.stream:
                record = await self._stream(client, body, start)
            else:
                record = await self._post(client, body, start)
        except asyncio.CancelledError:
            self.records.append(
                RequestRecord(
                    start - self.t0,
                    clock() - self.t0,
                    "timeout",
                    detail="still in flight after the grace period",
                )
            )
            raise
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors
            record = self._record(start, "timeout", detail=f"{type(exc).__name__}: {exc}".rstrip(": "))
        except aiohttp.ClientError as exc:
            record = self._record(start, "error", detail=f"{type(exc).__name__}: {exc}".rstrip(": "))
        self.records.append(record)
        return record

    def _record(self, start: float, outcome: Any, **fields: Any) -> RequestRecord:
        return RequestRecord(start - self.t0, clock() - self.t0, outcome, **fields)

    def _refused(self, start: float, response: aiohttp.ClientResponse, content: bytes) -> RequestRecord:
        status = response.status
        if status in THROTTLED:
            return self._record(
                start,
                "throttled",
                status=status,
                retry_after=retry_after_s(response.headers.get("retry-after")),
            )
        text = content[:160].decode("utf-8", "replace").strip()
        return self._record(start, "error", status=status, detail=f"HTTP {status}: {text}")

    async def _post(self, client: aiohttp.ClientSession, body: bytes, start: float) -> RequestRecord:
        async with client.post(self._path, data=body, headers=HEADERS) as response:
            content = await response.read()
        if response.status != 200:
            return self._refused(start, response, content)
        tokens = _completion_tokens(content) if self.target.is_llm else None
        return self._record(start, "ok", status=200, output_tokens=tokens)

    async def _stream(self, client: aiohttp.ClientSession, body: bytes, start: float) -> RequestRecord:
        async with client.post(self._path, data=body, headers=HEADERS) as response:
            if response.status != 200:
                return self._refused(start, response, await response.read())
            decoder, timing = SSEDecoder(), StreamTiming(start)
            async for chunk in response.content.iter_any():
                now = clock()
                for data in decoder.feed(chunk):
                    timing.on_data(data, now)
            for data in decoder.close():
                timing.on_data(data, clock())
        if timing.error is not None or timing.ttft is None:
            detail = timing.error or "the response streamed no text (does the server stream SSE events?)"
            return self._record(start, "error", status=200, detail=detail)
        return self._record(
            start, "ok", status=200, ttft=timing.ttft, itl=timing.gaps, output_tokens=timing.output_tokens
        )


async def _drain(tasks: list[asyncio.Task[Any]], deadline: float | None) -> None:
    """Wait for ``tasks`` until ``deadline`` (a clock() value), then cancel the rest (their requests time out)."""
    if not tasks:
        return
    timeout = None if deadline is None else max(0.0, deadline - clock())
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # a bug in a worker surfaces here, not as a silent lost record


async def closed_loop(
    sender: Sender,
    connections: Connections,
    concurrency: int,
    *,
    stop: float,
    grace_s: float,
    max_requests: int | None = None,
) -> None:
    """``concurrency`` workers, a connection each, send back to back until ``stop`` (or ``max_requests`` in all).

    A throttled answer's Retry-After is honoured: that worker sleeps for it (at most until ``stop``).
    """
    issued = 0

    async def worker() -> None:
        nonlocal issued
        client = connections.take()
        while clock() < stop and (max_requests is None or issued < max_requests):
            issued += 1
            record = await sender.send(client)
            if record.outcome == "throttled" and record.retry_after:
                await asyncio.sleep(min(record.retry_after, max(0.0, stop - clock())))
            elif record.outcome == "error" and record.status is None:
                await asyncio.sleep(_CONNECT_BACKOFF_S)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await _drain(workers, None if stop == float("inf") else stop + grace_s)


def arrivals(rate: float, horizon: float, seed: int) -> list[float]:
    """Poisson arrival times (exponential gaps, mean 1/rate) in [0, horizon), seeded."""
    rng, at = random.Random(seed), 0.0
    times: list[float] = []
    while True:
        at += rng.expovariate(rate)
        if at >= horizon:
            return times
        times.append(at)


async def open_loop(
    sender: Sender,
    connections: Connections,
    schedule: list[float],
    *,
    stop: float,
    grace_s: float,
    max_in_flight: int,
) -> None:
    """Send at the ``schedule``'s times (seconds after ``sender.t0``) until ``stop``; arrivals beyond the
    in-flight cap are recorded as dropped. A dispatcher that falls behind sends late, never early, and
    stops at ``stop`` (the shortfall shows as a send rate below the scheduled one)."""
    in_flight: set[asyncio.Task[RequestRecord]] = set()
    failures: list[BaseException] = []

    def finished(task: asyncio.Task[RequestRecord]) -> None:
        in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    async def one() -> RequestRecord:
        client = connections.take()
        try:
            return await sender.send(client)
        finally:
            connections.give(client)

    behind = 0
    for offset in schedule:
        delay = sender.t0 + offset - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind += 1
            if behind % 32 == 0:  # let responses be read even when the dispatcher is late
                await asyncio.sleep(0)
        now = clock()
        if now >= stop:
            break
        if len(in_flight) >= max_in_flight:
            t = now - sender.t0
            sender.records.append(
                RequestRecord(t, t, "dropped", detail=f"{max_in_flight} requests already in flight")
            )
            continue
        task = asyncio.create_task(one())
        in_flight.add(task)
        task.add_done_callback(finished)
    await _drain(list(in_flight), stop + grace_s)
    if failures:
        raise failures[0]


async def run_point(
    target: Target,
    point: LoadPoint,
    *,
    duration_s: float,
    warmup_s: float,
    grace_s: float,
    max_in_flight: int,
    schedule: list[float] | None = None,
    start_at: float | None = None,
) -> PointRun:
    """Run one load point against ``target`` and return its records.

    ``schedule``: the open loop's arrivals, when already drawn; ``start_at``: the clock() value the point
    starts at (the load processes of ``bench.workers`` start together), else now.
    """
    closed = point.mode == "concurrency"
    horizon = warmup_s + duration_s
    if schedule is None:
        schedule = [] if closed else arrivals(point.value, horizon, target.seed)
    async with Connections(target) as connections:
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - clock()))
        t0 = clock() if start_at is None else start_at
        sender = Sender(target, t0)
        stop = t0 + horizon
        if closed:
            await closed_loop(sender, connections, int(point.value), stop=stop, grace_s=grace_s)
        else:
            await open_loop(
                sender, connections, schedule, stop=stop, grace_s=grace_s, max_in_flight=max_in_flight
            )
    scheduled = None if closed else sum(1 for at in schedule if at >= warmup_s)
    return PointRun(point, sender.records, t0, (warmup_s, horizon), scheduled, connections.opened)


def run_here(
    target: Target,
    point: LoadPoint,
    *,
    duration_s: float,
    warmup_s: float,
    grace_s: float,
    max_in_flight: int,
) -> PointRun:
    """``run_point`` in this process, on its own event loop."""
    return run_loop(
        run_point(
            target,
            point,
            duration_s=duration_s,
            warmup_s=warmup_s,
            grace_s=grace_s,
            max_in_flight=max_in_flight,
        )
    )


async def preflight(target: Target) -> None:
    """One request before the load: an unreachable URL, an unknown model or a refused payload ends here."""
    # 120 s between reads (a first request may wait for a model's warm-up), not for the whole answer
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=120.0)
    async with Connections(target, timeout) as connections:
        record = await Sender(target, clock()).send(connections.take())
    where = f"{target.origin}{target.path}"
    if record.outcome in ("ok", "throttled"):
        return
    if record.status is None:
        raise AiHowError(
            f"cannot reach {target.url}: {record.detail}",
            fix="check the URL and that the model server is running",
        )
    if record.status == 404:
        raise AiHowError(
            f"model {target.model!r} not found: {where} answered 404 ({record.detail})",
            fix="check --model and --protocol; for vLLM and other OpenAI servers give the base URL, "
            "e.g. http://127.0.0.1:8000/v1",
        )
    raise AiHowError(
        f"{where} refused the benchmark request: {record.detail}",
        fix="the answer names the field: check --protocol, --input-tokens/--output-tokens (prompts are token "
        "ids 100..1000 for openai-completions; a small vocabulary needs openai-chat) and --stream",
    )


def send_requests(
    url: str, model: str, protocol: str, total: int, concurrency: int, max_tokens: int = 16
) -> dict[str, Any]:
    """Send exactly ``total`` requests from ``concurrency`` workers (no warm-up); the summary of
    ``bench.metrics.summarize`` (errors, requests_per_s, latency_ms, ...). For tests and scripts."""
    from ai_how.bench.metrics import summarize

    target = Target(url, model, protocol, output_tokens=max_tokens)

    async def go() -> list[RequestRecord]:
        async with Connections(target) as connections:
            sender = Sender(target, clock())
            await closed_loop(
                sender, connections, concurrency, stop=float("inf"), grace_s=0, max_requests=total
            )
            return sender.records

    records = run_loop(go())
    last_start = max((r.start for r in records), default=0.0)
    return summarize(records, start=0.0, stop=last_start + 1e-9)
