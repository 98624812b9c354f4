"""The load generator's client against servers that misbehave on purpose (raw sockets, no HTTP
framework): each failure becomes the record a user reads in the report, never an exception."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from ai_how.bench.loadgen import Connections, Sender, Target, clock
from ai_how.bench.records import RequestRecord

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


def _send_one(handler: Handler, timeout: aiohttp.ClientTimeout) -> RequestRecord:
    async def go() -> RequestRecord:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = Target(f"http://127.0.0.1:{port}", "digits", "v1")
        try:
            async with Connections(target, timeout) as connections:
                return await Sender(target, clock()).send(connections.take())
        finally:
            server.close()

    return asyncio.run(go())


def _answer(raw: bytes) -> Handler:
    """A server that reads the request, writes ``raw`` and closes the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()

    return handler


def test_a_server_that_closes_mid_answer_is_an_error() -> None:
    cut = _answer(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"predictions"')
    record = _send_one(cut, aiohttp.ClientTimeout(total=None, sock_read=5))
    assert record.outcome == "error" and record.status is None
    assert record.detail and "Payload" in record.detail, record.detail


def test_a_server_that_goes_silent_is_a_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    record = _send_one(stall, aiohttp.ClientTimeout(total=None, sock_read=0.3))
    assert record.outcome == "timeout", record
    assert record.end - record.start < 3


def test_a_throttled_answer_keeps_its_retry_after() -> None:
    busy = _answer(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 4\r\n\r\nbusy")
    record = _send_one(busy, aiohttp.ClientTimeout(total=None, sock_read=5))
    assert record.outcome == "throttled" and record.status == 429 and record.retry_after == 2.0
