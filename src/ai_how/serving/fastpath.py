"""The hot routes answered straight from ASGI, in front of KServe's FastAPI app.

At thousands of LLM requests per second the server process is host-bound, and FastAPI's and
KServe's middleware stack (per-request CPU timing, exit stacks, three ``BaseHTTPMiddleware``
layers) costs more than the request itself. The OpenAI POST routes are plain Starlette handlers,
so this wrapper calls them directly and hands everything else (V1/V2, health, metrics, models
list) to the app unchanged. Requests answered here are counted in the same
``ai_how_requests_total`` series as the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]


class FastPath:
    def __init__(
        self,
        app: ASGI,
        routes: dict[str, Callable[[Request], Awaitable[Response]]],
        count: Callable[[str, str, int], None],
    ) -> None:
        self.app, self.routes, self.count = app, routes, count

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        code = 500
        try:
            response = await route(Request(scope, receive))
            code = response.status_code
            await response(scope, receive, send)
        finally:
            self.count(scope["path"], "POST", code)
