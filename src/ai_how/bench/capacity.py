"""How many requests/s this load generator can drive at all: its loop against a trivially fast endpoint.

The endpoint runs in a child process (``python -m ai_how.bench.capacity PORT``): a raw asyncio
HTTP/1.1 server that answers every request with ``200 {}`` on a kept-alive connection. An open-loop
point whose send rate stays below 90 % of its schedule is client-bound; this figure says how far one
Python process goes (split the load over several processes beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

from ai_how.bench.metrics import summarize
from ai_how.bench.records import LoadPoint
from ai_how.procs import free_port, wait_port

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


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


async def _serve(port: int) -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


async def client_capacity(duration_s: float = 2.0, concurrency: int = 64) -> float:
    """Requests/s of a closed loop of ``concurrency`` workers against the trivial endpoint (after 0.5 s warm-up)."""
    from ai_how.bench.loadgen import Target, run_point

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ai_how.bench.capacity", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await asyncio.to_thread(wait_port, port, 30)
        run = await run_point(
            Target(f"http://127.0.0.1:{port}", "trivial", "v1"),
            LoadPoint("concurrency", concurrency),
            duration_s=duration_s,
            warmup_s=0.5,
            grace_s=5.0,
            max_in_flight=concurrency,
        )
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(5)
        if server.poll() is None:
            server.kill()
            server.wait()
    start, stop = run.window
    return float(summarize(run.records, start=start, stop=stop)["requests_per_s"] or 0.0)


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
