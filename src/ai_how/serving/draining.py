"""Handing the production port over without dropping a request: the old server drains before it stops.

On SIGUSR2 the server stops accepting connections on the production port (SO_REUSEPORT sends new ones
to the new server) and answers every further request with ``Connection: close``, so each client's
keep-alive connection moves to the new server after its next answer. Only then is it stopped: closing
a kept-alive connection while its client is sending the next request is what loses requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Draining:
    """ASGI middleware: once :meth:`start` is called, every HTTP response says ``Connection: close``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False
        self.listeners: list[Any] = []  # uvicorn servers of the production port, closed when draining

    def start(self) -> None:
        self.draining = True
        for uvicorn_server in self.listeners:
            for listener in getattr(uvicorn_server, "servers", []):
                listener.close()  # stop accepting; open connections carry on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.draining:
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, closing)
