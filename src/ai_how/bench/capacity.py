"""How many requests/s this load generator can drive at all: its loop against a trivially fast endpoint.

The endpoint runs in child processes (``python -m ai_how.bench.capacity PORT PROCESSES``): a raw
HTTP/1.1 server on the event loop of ``ai_how.eventloop`` that answers every request with ``200 {}``
on a kept-alive connection, pre-forked over one listening socket (one server process per 4 load
processes, so the endpoint is not the limit). An open-loop point whose send rate stays below 90 % of
its schedule is client-bound; this figure says how far the run's load processes go together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from ai_how.bench.metrics import summarize
from ai_how.bench.records import LoadPoint
from ai_how.eventloop import run_loop
from ai_how.procs import free_port, wait_port

if TYPE_CHECKING:
    from ai_how.bench.loadgen import RunPoint

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
LOAD_PROCESSES_PER_SERVER = 4
CONCURRENCY_PER_PROCESS = 64


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            writer.write(_ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _serve(sock: socket.socket) -> None:
    server = await asyncio.start_server(_answer, sock=sock)
    async with server:
        await server.serve_forever()


def serve(port: int, processes: int) -> None:
    """Listen on ``port`` and answer in ``processes`` processes (forked after the socket is bound)."""
    sock = socket.create_server(("127.0.0.1", port), backlog=4096)
    for _ in range(processes - 1):
        if os.fork() == 0:
            break
    run_loop(_serve(sock))


def client_capacity(run: RunPoint | None = None, processes: int = 1, duration_s: float = 2.0) -> float:
    """Requests/s of a closed loop of 64 connections per load process against the trivial endpoint
    (after 0.5 s warm-up); ``run`` runs the point (``workers.LoadProcesses`` of ``processes``, or here)."""
    from ai_how.bench.loadgen import Target, run_here

    port = free_port()
    servers = -(-processes // LOAD_PROCESSES_PER_SERVER)
    server = subprocess.Popen(
        [sys.executable, "-m", "ai_how.bench.capacity", str(port), str(servers)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    concurrency = CONCURRENCY_PER_PROCESS * processes
    try:
        wait_port(port, 30)
        result = (run or run_here)(
            Target(f"http://127.0.0.1:{port}", "trivial", "v1"),
            LoadPoint("concurrency", concurrency),
            duration_s=duration_s,
            warmup_s=0.5,
            grace_s=5.0,
            max_in_flight=concurrency,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and its forks
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(5)
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    start, stop = result.window
    return float(summarize(result.records, start=start, stop=stop)["requests_per_s"] or 0.0)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
