"""A load point spread over N load processes, started together; the parent merges their records.

One Python process drives ~0.5-1k requests/s at most (``bench.capacity``), less when it reads
streams; an LLM server on a GPU takes more. Each process drives 1/N of the point: an open loop R/N
req/s (N independent Poisson streams, seeded apart, superpose to one at R), a closed loop C/N
connections (the remainder to the first ones; a process with none sits the point out). The processes
are ``spawn``-ed once per run and kept across points; per point each gets its share, draws its
schedule, answers "armed", gets the common start instant (wall clock) and sends back its records
packed as columns. The parent computes the figures over all records, as for one process; GPU
sampling stays in the parent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from ai_how.bench.loadgen import PointRun, Target, arrivals, clock, run_point
from ai_how.bench.metrics import measured
from ai_how.bench.records import LoadPoint, PackedRecords, pack, unpack
from ai_how.errors import AiHowError
from ai_how.eventloop import run_loop

MAX_AUTO = 16  # --processes auto: one per core, at most this many
_START_LEAD_S = 0.2  # from the start instant's broadcast to the start: the pipes' latency, with room
_READY_TIMEOUT_S = 120.0  # a spawned process imports aiohttp and the load loops
_ARM_TIMEOUT_S = 60.0  # drawing a long schedule
_ANSWER_SLACK_S = 60.0  # beyond warm-up + duration + grace: packing and sending the records
_PARENT_POLL_S = 0.5


@dataclass(frozen=True)
class Job:
    """One process's share of a load point."""

    target: Target
    point: LoadPoint
    duration_s: float
    warmup_s: float
    grace_s: float
    max_in_flight: int


@dataclass(frozen=True)
class WorkerResult:
    """What one process sends back for a point: its records and its own count of them."""

    records: PackedRecords
    scheduled: int | None  # open loop: its arrivals in the measured window
    connections: int
    issued: int  # requests it started inside the measured window


def spread(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal integers, the remainder to the first ones: spread(5, 2) == [3, 2]."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def shares(point: LoadPoint, max_in_flight: int, processes: int) -> list[tuple[LoadPoint, int]]:
    """Each process's ``(load point, in-flight cap)``; processes without load are left out."""
    caps = [max(1, cap) for cap in spread(max_in_flight, processes)]
    if point.mode == "rate":
        return [(LoadPoint("rate", point.value / processes), cap) for cap in caps]
    counts = spread(int(point.value), processes)
    return [(LoadPoint("concurrency", n), cap) for n, cap in zip(counts, caps, strict=True) if n]


def merge(
    point: LoadPoint, results: Sequence[WorkerResult], t0: float, window: tuple[float, float]
) -> PointRun:
    """One ``PointRun`` from the processes' results: all records (times share ``t0``), scheduled
    arrivals and connections summed, each process's own count kept in ``workers``."""
    records = [record for result in results for record in unpack(result.records)]
    scheduled = None if point.mode == "concurrency" else sum(r.scheduled or 0 for r in results)
    return PointRun(
        point,
        records,
        t0,
        window,
        scheduled,
        sum(r.connections for r in results),
        [{"issued": r.issued, "connections": r.connections} for r in results],
    )


def _run_job(job: Job, conn: Connection) -> WorkerResult:
    horizon = job.warmup_s + job.duration_s
    closed = job.point.mode == "concurrency"
    schedule = [] if closed else arrivals(job.point.value, horizon, job.target.seed)
    conn.send(("armed", None))
    start_wall = float(conn.recv())
    run = run_loop(
        run_point(
            job.target,
            job.point,
            duration_s=job.duration_s,
            warmup_s=job.warmup_s,
            grace_s=job.grace_s,
            max_in_flight=job.max_in_flight,
            schedule=schedule,
            start_at=clock() + (start_wall - time.time()),
        )
    )
    start, stop = run.window
    issued = len(measured(run.records, start, stop))
    return WorkerResult(pack(run.records), run.scheduled, run.connections, issued)


def _exit_with_parent(parent: int) -> None:
    """End this process when the parent is gone (killed without stopping its load processes)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _worker_main(conn: Connection) -> None:
    """A load process: runs the jobs the parent sends until it sends None (or goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the processes
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        conn.send(("ready", None))
        while (job := conn.recv()) is not None:
            try:
                answer: tuple[str, Any] = ("done", _run_job(job, conn))
            except Exception as exc:
                answer = ("failed", f"{type(exc).__name__}: {exc}".rstrip(": "))
            conn.send(answer)
    except (EOFError, OSError):
        pass  # the parent is gone


def _exit_reason(process: BaseProcess) -> str:
    process.join(1)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"exited with code {code}"
    return f"exited with code {code}"


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection


class LoadProcesses:
    """N load processes for a run (a context manager); calling it runs a point like ``loadgen.run_here``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers: list[_Worker] = []
        self._ready = False

    @property
    def pids(self) -> list[int | None]:
        """The load processes' ids."""
        return [w.process.pid for w in self._workers]

    def __enter__(self) -> LoadProcesses:
        context = multiprocessing.get_context("spawn")
        for i in range(self.count):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(theirs,), name=f"ai-how-bench-load-{i + 1}", daemon=True
            )
            process.start()
            theirs.close()
            self._workers.append(_Worker(process, mine))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for worker in self._workers:
            if kind is None:  # done: each process ends after its loop; after an error, stop them now
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
            else:
                worker.process.terminate()
        deadline = time.monotonic() + 5
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def __call__(
        self,
        target: Target,
        point: LoadPoint,
        *,
        duration_s: float,
        warmup_s: float,
        grace_s: float,
        max_in_flight: int,
    ) -> PointRun:
        if not self._ready:
            self._collect(self._workers, "ready", "starting the load processes", _READY_TIMEOUT_S)
            self._ready = True
        parts = shares(point, max_in_flight, self.count)
        active = self._workers[: len(parts)]
        for i, (share, cap) in enumerate(parts):
            own = dataclasses.replace(target, seed=target.seed + i)  # independent arrivals and prompts
            self._send(i, Job(own, share, duration_s, warmup_s, grace_s, cap), point.label)
        self._collect(active, "armed", point.label, _ARM_TIMEOUT_S)
        wall, now = time.time(), clock()
        for i in range(len(active)):
            self._send(i, wall + _START_LEAD_S, point.label)
        timeout = _START_LEAD_S + warmup_s + duration_s + grace_s + _ANSWER_SLACK_S
        results: list[WorkerResult] = self._collect(active, "done", point.label, timeout)
        return merge(point, results, now + _START_LEAD_S, (warmup_s, warmup_s + duration_s))

    def _fail(self, i: int, what: str, why: str) -> AiHowError:
        return AiHowError(
            f"{what}: load process {i + 1} of {self.count} {why}",
            fix="run with --processes 1 to see the error in this process",
        )

    def _send(self, i: int, message: object, what: str) -> None:
        worker = self._workers[i]
        try:
            worker.conn.send(message)
        except OSError:
            raise self._fail(i, what, _exit_reason(worker.process)) from None

    def _collect(self, workers: list[_Worker], kind: str, what: str, timeout_s: float) -> list[Any]:
        """The ``kind`` answer of every one of ``workers``, in order; one error line for a failure, a
        process that died or one that gave no answer within ``timeout_s``."""
        answers: list[Any] = [None] * len(workers)
        pending = {id(w.conn): i for i, w in enumerate(workers)}
        deadline = clock() + timeout_s

        def fail(i: int, why: str) -> AiHowError:
            return self._fail(i, what, why)

        while pending:
            left = deadline - clock()
            if left <= 0:
                raise fail(min(pending.values()), f"gave no answer within {timeout_s:g} s")
            waiting = [workers[i] for i in pending.values()]
            ready = wait([w.conn for w in waiting] + [w.process.sentinel for w in waiting], timeout=left)
            for worker in waiting:
                i = pending[id(worker.conn)]
                if worker.conn in ready or worker.conn.poll():
                    try:
                        got, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        raise fail(i, _exit_reason(worker.process)) from None
                    if got == "failed":
                        raise fail(i, f"failed: {payload}")
                    if got != kind:
                        raise fail(i, f"answered {got!r} where {kind!r} was due")
                    answers[i] = payload
                    del pending[id(worker.conn)]
                elif worker.process.sentinel in ready:
                    raise fail(i, _exit_reason(worker.process))
        return answers
