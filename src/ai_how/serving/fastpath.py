"""The hot routes answered straight from ASGI, in front of KServe's FastAPI app.

Hot routes: OpenAI completions and chat (openai_routes.py) and KServe V1 predict for every model
(``v1_routes``: same body, same answers and errors as KServe's, ``{"error": ...}`` with 400/429/503).

At thousands of LLM requests per second the server process is host-bound, and FastAPI's and
KServe's middleware stack (per-request CPU timing, exit stacks, three ``BaseHTTPMiddleware``
layers) costs more than the request itself. The OpenAI POST routes are plain Starlette handlers,
so this wrapper calls them directly and hands everything else (V1/V2, health, metrics, models
list) to the app unchanged. Requests answered here are counted in the same
``ai_how_requests_total`` and ``ai_how_requests_in_flight`` series as the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]
Route = Callable[[Request], Awaitable[Response]]


class RequestMetrics(Protocol):
    """Counts requests: one in flight from ``started`` until ``finished`` (which counts it by code)."""

    def started(self) -> None: ...

    def finished(self, route: str, method: str, code: int) -> None: ...


class FastPath:
    def __init__(
        self,
        app: ASGI,
        routes: dict[str, Route],
        metrics: RequestMetrics,
        get_routes: dict[str, Route] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.app, self.metrics = app, metrics
        self.routes = {"POST": routes, "GET": get_routes or {}}
        self.labels = labels or {}  # path -> the route template the app's own counts use

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        route = None
        if scope["type"] == "http":
            route = self.routes.get(scope.get("method", ""), {}).get(scope.get("path", ""))
        if route is None:
            await self.app(scope, receive, send)
            return
        code = 500
        self.metrics.started()
        try:
            response = await route(Request(scope, receive))
            code = response.status_code
            await response(scope, receive, send)
        finally:
            path: str = scope["path"]
            self.metrics.finished(self.labels.get(path) or path, scope["method"], code)


def health_routes(models: dict[str, Any]) -> dict[str, Route]:
    """V2 server health, answered without the middleware stack so it stays fast under load
    (KServe's answers: live is ``{"live": true}``; ready is 200 only when every model is ready)."""
    import orjson

    async def live(request: Request) -> Response:
        return Response(orjson.dumps({"live": True}), media_type="application/json")

    async def ready(request: Request) -> Response:
        ok = all(model.ready for model in models.values())
        return Response(orjson.dumps({"ready": ok}), 200 if ok else 503, media_type="application/json")

    return {"/v2/health/live": live, "/v2/health/ready": ready}


def refusal(exc: Exception) -> tuple[int, dict[str, str], dict[str, str]]:
    """KServe-style answer to an engine that refuses: (status, body, headers). A full queue is a 429
    with Retry-After; an engine that has stopped is a 503. One place for the V1 fast path and the app."""
    from ai_how.serving.engine.protocol import EngineFull

    if isinstance(exc, EngineFull):
        return 429, {"error": f"the server is at capacity ({exc}); retry after 1 s"}, {"Retry-After": "1"}
    return 503, {"error": f"the model cannot answer: {exc}"}, {}


def v1_routes(models: dict[str, Any], versions: dict[str, str]) -> dict[str, Route]:
    """``POST /v1/models/NAME:predict`` for each model: its async ``predict`` on the parsed body."""
    import time

    import orjson
    from kserve.errors import InferenceError, InvalidInput
    from kserve.metrics import PREDICT_HIST_TIME

    from ai_how.serving.engine.protocol import EngineFull, EngineGone
    from ai_how.serving.headers import NAME_HEADER, VERSION_HEADER

    def route_for(name: str, model: Any) -> Route:
        headers = {NAME_HEADER: name, VERSION_HEADER: versions.get(name, "")}

        def answer(body: Any, status: int = 200, extra: dict[str, str] | None = None) -> Response:
            return Response(
                orjson.dumps(body), status, {**headers, **(extra or {})}, media_type="application/json"
            )

        async def predict(request: Request) -> Response:
            started = time.perf_counter()
            if not model.ready:
                return answer({"error": f"Model with name {name} is not ready."}, 503)
            try:
                payload = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return answer({"error": "Unrecognized request format: the body is not JSON"}, 400)
            try:
                result = await model.predict(payload)
            except InvalidInput as exc:
                return answer({"error": str(getattr(exc, "reason", exc))}, 400)
            except (EngineFull, EngineGone) as exc:
                status, body, extra = refusal(exc)
                return answer(body, status, extra)
            except InferenceError as exc:
                return answer({"error": str(exc)}, 500)
            PREDICT_HIST_TIME.labels(model_name=name).observe(time.perf_counter() - started)
            return answer(result)

        return predict

    return {f"/v1/models/{name}:predict": route_for(name, model) for name, model in models.items()}


V1_PREDICT = "/v1/models/{model_name}:predict"  # KServe's route template, the label of V1 counts
