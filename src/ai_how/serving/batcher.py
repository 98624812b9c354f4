"""Micro-batching for a model server: concurrent requests share one forward pass.

``await MicroBatcher(fn).submit(rows)`` returns exactly the caller's rows of ``fn`` applied to a batch
that holds ``rows`` and other callers' rows. Dispatch is continuous: when no batch runs, what is
pending runs at once (a lone request at low load waits for nobody); while a batch runs in the worker
thread, new requests collect, and when it finishes everything pending (up to ``max_batch`` rows) goes
as the next batch. ``max_wait_s > 0`` makes an idle batcher wait up to that long for ``max_batch``
rows first (throughput over latency). ``fn`` runs in one worker thread, so the event loop keeps taking
requests while it computes (torch releases the GIL).

Each caller validates its own rows before submitting: the batcher only groups arrays of the same
row shape and dtype, and an exception raised by ``fn`` fails the callers of that batch alone.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np

if TYPE_CHECKING:
    from prometheus_client import Histogram

# What the batch function returns: one array, or a tuple of arrays, each with one row per input row.
R = TypeVar("R", bound="np.ndarray | tuple[np.ndarray, ...]")

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@functools.cache
def batch_size_histogram() -> Histogram:
    """``ai_how_batch_size{model}``: rows in each batch a model ran (one per process, on the default registry)."""
    from prometheus_client import Histogram

    return Histogram("ai_how_batch_size", "Rows in each batch a model ran", ["model"], buckets=BATCH_BUCKETS)


@dataclass
class _Request:
    rows: np.ndarray
    future: asyncio.Future[Any]


class MicroBatcher(Generic[R]):
    """Runs ``fn`` on the rows of concurrent ``submit`` calls, one batch at a time, in one worker thread."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], R],
        max_batch: int = 64,
        max_wait_s: float = 0.0,
        model: str = "model",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more, not {max_wait_s}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.model = model
        # Counters for tests and benchmarks; the histogram is what /metrics shows.
        self.batches = 0
        self.rows = 0
        self.largest_batch = 0
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        self._runner: asyncio.Task[None] | None = None
        self._filled: asyncio.Event | None = None  # set when max_batch rows wait (only during max_wait_s)
        self._executor: ThreadPoolExecutor | None = None

    async def submit(self, rows: np.ndarray) -> R:
        """``fn``'s rows for ``rows`` (an array of N >= 1 rows), computed in a batch with other callers'."""
        if not isinstance(rows, np.ndarray) or rows.ndim == 0 or len(rows) == 0:
            raise ValueError("submit takes a numpy array of at least one row")
        loop = asyncio.get_running_loop()
        runner = self._runner
        if runner is not None and not runner.done() and runner.get_loop() is not loop:
            raise RuntimeError("a MicroBatcher serves one event loop at a time")
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Request(rows, future))
        self._pending_rows += len(rows)
        if self._filled is not None and self._pending_rows >= self.max_batch:
            self._filled.set()
        if runner is None or runner.done():
            self._runner = loop.create_task(self._run())
        return await future

    @property
    def pending(self) -> int:
        """Requests waiting for a batch (not counting the batch running)."""
        return len(self._pending)

    def close(self) -> None:
        """Let the worker thread go once the batch it runs (if any) is done."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _run(self) -> None:
        try:
            if self.max_wait_s > 0 and self._pending_rows < self.max_batch:
                await self._wait_for_rows()
            while self._pending:
                batch = self._take()
                if batch:
                    await self._run_batch(batch)
        except asyncio.CancelledError:  # the loop is going away: nobody is left waiting for an answer
            for request in self._pending:
                request.future.cancel()
            self._pending.clear()
            self._pending_rows = 0
            raise

    async def _wait_for_rows(self) -> None:
        self._filled = asyncio.Event()
        try:
            await asyncio.wait_for(self._filled.wait(), self.max_wait_s)
        except TimeoutError:
            pass
        finally:
            self._filled = None

    def _take(self) -> list[_Request]:
        """The next batch: the oldest request, then every later one of the same row shape that fits."""
        batch: list[_Request] = []
        rest: deque[_Request] = deque()
        rows = 0
        while self._pending:
            request = self._pending.popleft()
            count = len(request.rows)
            if request.future.done():  # its caller went away (cancelled) before it ran
                self._pending_rows -= count
                continue
            fits = not batch or (
                rows + count <= self.max_batch
                and request.rows.shape[1:] == batch[0].rows.shape[1:]
                and request.rows.dtype == batch[0].rows.dtype
            )
            if fits:
                batch.append(request)
                rows += count
                self._pending_rows -= count
            else:
                rest.append(request)
        self._pending = rest
        return batch

    async def _run_batch(self, batch: list[_Request]) -> None:
        counts = [len(request.rows) for request in batch]
        total = sum(counts)
        self.batches += 1
        self.rows += total
        self.largest_batch = max(self.largest_batch, total)
        batch_size_histogram().labels(model=self.model).observe(total)
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([request.rows for request in batch])
        try:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{self.model}")
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, rows)
            parts = split_rows(out, counts)
        except Exception as exc:  # this batch's callers get the error; later batches still run
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing) or the process is stopping
            for request in batch:
                request.future.cancel()
            raise
        for request, part in zip(batch, parts, strict=True):
            if not request.future.done():
                request.future.set_result(part)


def split_rows(out: R, counts: list[int]) -> list[R]:
    """``out`` (an array or a tuple of arrays, one row per input row) cut into consecutive ``counts`` rows."""
    arrays = out if isinstance(out, tuple) else (out,)
    total = sum(counts)
    for array in arrays:
        if not isinstance(array, np.ndarray) or array.ndim == 0 or len(array) != total:
            got = len(array) if isinstance(array, np.ndarray) and array.ndim else "no"
            raise RuntimeError(f"the batch function returned {got} rows for {total} input rows")
    edges = np.cumsum(counts)[:-1]
    pieces = [np.split(array, edges) for array in arrays]
    if isinstance(out, tuple):
        return [cast(R, tuple(piece[i] for piece in pieces)) for i in range(len(counts))]
    return [cast(R, piece) for piece in pieces[0]]
