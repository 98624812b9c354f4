"""OpenAI-compatible routes on KServe's app (KServe's own OpenAI classes import vLLM, which
cannot be installed next to the CPU torch). Paths follow KServe: ``/openai/v1/...``.

Both ``max_tokens`` and ``max_completion_tokens`` are honoured (Oumi's REMOTE engine sends
the latter). Latency lands in KServe's ``request_predict_seconds{model_name}`` histogram.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.metrics import PREDICT_HIST_TIME

from ai_how.serving.runtimes import Generation, LLMModel

PREFIX = "/openai/v1"


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens", 32))
    if value is None:
        return 32
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("max_tokens / max_completion_tokens must be an integer")
    return value


def _sampling(body: dict[str, Any]) -> tuple[float, float, list[str]]:
    temperature = body.get("temperature", 0.0) or 0.0
    top_p = body.get("top_p", 1.0) or 1.0
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(temperature, int | float)
        or not isinstance(top_p, int | float)
        or not isinstance(stop, list)
    ):
        raise InvalidInput("temperature/top_p must be numbers and stop a string or list")
    if body.get("n", 1) != 1 or body.get("stream"):
        raise InvalidInput("only n=1 without streaming is supported")
    return float(temperature), float(top_p), [str(s) for s in stop]


def _usage(gen: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
    }


def register(app: FastAPI, model: LLMModel) -> None:
    async def read(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise InvalidInput("request body is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        name = body.get("model", model.name)
        if name != model.name:
            raise LookupError(name)
        return body

    async def run(fn: Any) -> Any:
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn)
        finally:
            PREDICT_HIST_TIME.labels(model_name=model.name).observe(time.perf_counter() - started)

    async def guarded(request: Request, handler: Any) -> JSONResponse:
        try:
            body = await read(request)
            return JSONResponse(await handler(body))
        except InvalidInput as exc:
            return _error(400, str(exc.reason if hasattr(exc, "reason") else exc))
        except LookupError as exc:
            return _error(
                404, f"model {exc.args[0]!r} not found; this server serves {model.name!r}", "not_found_error"
            )

    async def answer(
        body: dict[str, Any], prompt: str, object_kind: str, id_prefix: str, choice: Any
    ) -> dict[str, Any]:
        """Generate for ``prompt`` with the request's sampling and limits; wrap it as an OpenAI response."""
        temperature, top_p, stop = _sampling(body)
        gen: Generation = await run(
            lambda: model.generate(prompt, _max_tokens(body), temperature, top_p, stop)
        )
        return {
            "id": f"{id_prefix}-{uuid.uuid4().hex}",
            "object": object_kind,
            "created": int(time.time()),
            "model": model.name,
            "choices": [
                {"index": 0, **choice(gen.text), "finish_reason": gen.finish_reason, "logprobs": None}
            ],
            "usage": _usage(gen),
        }

    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        prompt = model.chat_prompt(body.get("messages"))  # type: ignore[arg-type]
        return await answer(
            body,
            prompt,
            "chat.completion",
            "chatcmpl",
            lambda text: {"message": {"role": "assistant", "content": text}},
        )

    async def completion(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidInput("prompt must be a string")
        return await answer(body, prompt, "text_completion", "cmpl", lambda text: {"text": text})

    async def chat_route(request: Request) -> JSONResponse:
        return await guarded(request, chat)

    async def completion_route(request: Request) -> JSONResponse:
        return await guarded(request, completion)

    async def models_route() -> JSONResponse:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": model.name, "object": "model", "created": int(time.time()), "owned_by": "ai-how"}
                ],
            }
        )

    app.add_api_route(f"{PREFIX}/chat/completions", chat_route, methods=["POST"])
    app.add_api_route(f"{PREFIX}/completions", completion_route, methods=["POST"])
    app.add_api_route(f"{PREFIX}/models", models_route, methods=["GET"])
