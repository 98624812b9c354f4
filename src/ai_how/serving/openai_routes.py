"""OpenAI-compatible routes on KServe's app, for every LLM this server holds (``/openai/v1/...``).

KServe's own OpenAI classes import vLLM, which cannot be installed next to the CPU torch, so the
routes are ours. They follow vLLM's behaviour, which clients and benchmarks expect:

- ``stream: true`` answers Server-Sent Events: ``data: {chunk}`` lines, the first content chunk
  preceded by the ``role`` delta (sent together with the first token, so time-to-first-token is
  real), ``finish_reason`` on the last content chunk, a ``choices: []`` chunk with ``usage`` when
  ``stream_options.include_usage``, then ``data: [DONE]``. Tokens produced between two reads are
  coalesced into one event.
- ``n``, ``stop``, ``seed``, ``temperature``, ``top_p``, ``ignore_eos``, ``max_tokens`` /
  ``max_completion_tokens`` (Oumi's REMOTE engine sends the latter); completions take a prompt as
  text or as a list of token ids.
- A full admission queue answers 429 with ``Retry-After``; a body over ``MAX_BODY_BYTES``, bad
  fields or a prompt beyond the context answer 400 naming the field. A client that goes away
  (closed stream or dropped connection) cancels its request and frees its KV slot.

Latency lands in KServe's ``request_predict_seconds{model_name}`` histogram.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from kserve.errors import InvalidInput
from kserve.metrics import PREDICT_HIST_TIME

from ai_how.serving.engine.protocol import EngineFull, EngineGone, SamplingParams
from ai_how.serving.headers import NAME_HEADER, VERSION_HEADER
from ai_how.serving.runtimes import LLMModel

PREFIX = "/openai/v1"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_N = 16
DEFAULT_MAX_TOKENS = 256
RETRY_AFTER_S = 1


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return _json({"error": {"message": message, "type": kind, "code": status}}, status, headers)


def _number(body: dict[str, Any], field: str, default: float, low: float, high: float) -> float:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a number between {low:g} and {high:g}")
    return float(value)


def _integer(body: dict[str, Any], field: str, default: int | None, low: int) -> int | None:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidInput(f"{field} must be an integer >= {low}")
    return value


def _seed(body: dict[str, Any]) -> int | None:
    seed = _integer(body, "seed", None, 0)
    if seed is not None and seed >= 2**63:
        raise InvalidInput("seed must be an integer between 0 and 2**63 - 1")
    return seed


def sampling(body: dict[str, Any], prompt_tokens: int, context: int) -> SamplingParams:
    """The request's sampling and limits, each bad field named in a 400."""
    asked = _integer(body, "max_completion_tokens", None, 1)
    if asked is None:
        asked = _integer(body, "max_tokens", None, 1)
    room = context - prompt_tokens
    if room < 1:
        raise InvalidInput(f"the prompt has {prompt_tokens} tokens; the model's context is {context}")
    if asked is not None and asked > room:
        raise InvalidInput(
            f"max_tokens ({asked}) + the prompt ({prompt_tokens} tokens) exceed the context of {context} tokens"
        )
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 8:
        raise InvalidInput("stop must be a string or a list of at most 8 strings")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidInput("ignore_eos must be true or false")
    return SamplingParams(
        max_tokens=asked if asked is not None else min(DEFAULT_MAX_TOKENS, room),
        temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        seed=_seed(body),
        stop=tuple(stop),
        ignore_eos=ignore_eos,
    )


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class _Kind:
    """What differs between chat and completions responses."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.id_prefix = "chatcmpl" if chat else "cmpl"

    def choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        body = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        return {"index": index, **body, "logprobs": None, "finish_reason": finish}

    def delta(self, index: int, text: str, finish: str | None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if role else {"content": text}
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def _finish_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


async def _cancel_on_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """Run ``work``; cancel it (freeing its slots) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        raise ConnectionAbortedError
    return task.result()


Route = Callable[[Request], Awaitable[Response]]


def register(
    app: FastAPI, models: dict[str, LLMModel], versions: dict[str, str] | None = None
) -> dict[str, Route]:
    """Add the OpenAI routes serving ``models`` (name -> loaded LLMModel) to ``app``; returns the
    POST routes by path, for the server's fast path (fastpath.py), which answers them without
    FastAPI's and KServe's middleware. Responses name the model and version that answered."""
    versions = versions or {}

    def identify(response: Response, name: str) -> Response:
        response.headers[NAME_HEADER] = name
        if versions.get(name):
            response.headers[VERSION_HEADER] = versions[name]
        return response

    async def read(request: Request) -> tuple[dict[str, Any], LLMModel]:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY_BYTES:
            raise InvalidInput(f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidInput(f"request body is over {MAX_BODY_BYTES} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidInput("request body is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        name = body.get("model")
        if name is None and len(models) == 1:
            name = next(iter(models))
        if name not in models:
            raise LookupError(name)
        return body, models[name]

    async def handle(request: Request, chat: bool) -> Response:
        started = time.perf_counter()
        name = "unknown"
        try:
            body, model = await read(request)
            name = model.name
            kind = _Kind(chat)
            if chat:
                prompt = model.chat_prompt(body.get("messages"))
            else:
                text = body.get("prompt")
                if isinstance(text, list) and len(text) == 1 and not isinstance(text[0], int):
                    text = text[0]
                prompt = model.encode(text)
            params = sampling(body, len(prompt), model.llm.context_limit)
            n = _integer(body, "n", 1, 1) or 1
            if n > MAX_N:
                raise InvalidInput(f"n must be at most {MAX_N}")
            if body.get("stream", False):
                options = body.get("stream_options") or {}
                usage = bool(isinstance(options, dict) and options.get("include_usage"))
                return identify(await _stream(model, kind, prompt, params, n, usage, started), name)
            answer = await _cancel_on_disconnect(request, _complete(model, kind, prompt, params, n))
            PREDICT_HIST_TIME.labels(model_name=name).observe(time.perf_counter() - started)
            return identify(_json(answer), name)
        except InvalidInput as exc:
            return _error(400, str(getattr(exc, "reason", exc)))
        except EngineFull as exc:
            return _error(
                429, f"the server is at capacity ({exc}); retry after {RETRY_AFTER_S} s", "overloaded"
            )
        except LookupError as exc:
            served = ", ".join(sorted(models))
            return _error(
                404, f"model {exc.args[0]!r} not found; this server serves {served}", "not_found_error"
            )
        except ConnectionAbortedError:
            return Response(status_code=499)

    async def chat_route(request: Request) -> Response:
        return await handle(request, chat=True)

    async def completion_route(request: Request) -> Response:
        return await handle(request, chat=False)

    async def models_route() -> Response:
        now = int(time.time())
        data = [{"id": name, "object": "model", "created": now, "owned_by": "ai-how"} for name in models]
        return _json({"object": "list", "data": data})

    app.add_api_route(f"{PREFIX}/chat/completions", chat_route, methods=["POST"])
    app.add_api_route(f"{PREFIX}/completions", completion_route, methods=["POST"])
    app.add_api_route(f"{PREFIX}/models", models_route, methods=["GET"])
    return {f"{PREFIX}/chat/completions": chat_route, f"{PREFIX}/completions": completion_route}


def _seeded(params: SamplingParams, index: int) -> SamplingParams:
    if params.seed is None or index == 0:
        return params
    from dataclasses import replace

    return replace(params, seed=params.seed + index)


async def _complete(
    model: LLMModel, kind: _Kind, prompt: list[int], params: SamplingParams, n: int
) -> dict[str, Any]:
    tasks = [asyncio.ensure_future(model.complete(prompt, _seeded(params, i))) for i in range(n)]
    try:
        answers = await asyncio.gather(*tasks)
    except BaseException:  # one choice refused or failed: the others must not run for nobody
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return {
        "id": f"{kind.id_prefix}-{uuid.uuid4().hex}",
        "object": kind.object,
        "created": int(time.time()),
        "model": model.name,
        "choices": [kind.choice(i, a.text, _finish_reason(a.finish)) for i, a in enumerate(answers)],
        "usage": _usage(len(prompt), sum(len(a.token_ids) for a in answers)),
    }


async def _stream(
    model: LLMModel,
    kind: _Kind,
    prompt: list[int],
    params: SamplingParams,
    n: int,
    include_usage: bool,
    started: float,
) -> Response:
    """Start every choice now (so a full queue is a 429, not a broken stream), then stream them."""
    streams = [model.llm.generate(prompt, _seeded(params, i)) for i in range(n)]
    # every choice starts at once (n prefills in one batch, not one after another)
    firsts = await asyncio.gather(*(stream.__anext__() for stream in streams), return_exceptions=True)
    failed = next((f for f in firsts if isinstance(f, BaseException)), None)
    if failed is not None:
        for stream in streams:
            await stream.aclose()
        if isinstance(failed, EngineFull | EngineGone):
            raise failed
        if isinstance(failed, ValueError):
            raise InvalidInput(str(failed)) from None
        raise failed
    header = {
        "id": f"{kind.id_prefix}-{uuid.uuid4().hex}",
        "object": kind.chunk_object,
        "created": int(time.time()),
        "model": model.name,
    }

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {**header, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        completion = 0

        async def pump(index: int, stream: Any, first: Any) -> None:
            await queue.put((index, first))
            if first.finish is None:
                async for chunk in stream:
                    await queue.put((index, chunk))
                    if chunk.finish is not None:
                        break

        tasks = [
            asyncio.ensure_future(pump(i, s, f)) for i, (s, f) in enumerate(zip(streams, firsts, strict=True))
        ]
        started_choices: set[int] = set()
        open_choices = n
        try:
            while open_choices:
                index, chunk = await queue.get()
                completion += len(chunk.token_ids)
                out = b""
                if index not in started_choices:
                    started_choices.add(index)
                    if kind.chat:
                        out += event([kind.delta(index, "", None, role=True)])
                finish = _finish_reason(chunk.finish) if chunk.finish is not None else None
                if chunk.finish == "error":
                    out += (
                        b"data: "
                        + orjson.dumps({"error": {"message": "generation failed", "code": 500}})
                        + b"\n\n"
                    )
                if chunk.text or finish is not None:
                    out += event([kind.delta(index, chunk.text, finish)])
                if chunk.finish is not None:
                    open_choices -= 1
                if out:
                    yield out
            if include_usage:
                yield event([], _usage(len(prompt), completion))
            yield b"data: [DONE]\n\n"
            PREDICT_HIST_TIME.labels(model_name=model.name).observe(time.perf_counter() - started)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for stream in streams:
                await stream.aclose()

    return StreamingResponse(events(), media_type="text/event-stream")
