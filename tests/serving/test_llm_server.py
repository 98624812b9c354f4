"""The model server as users and benchmarks talk to it: OpenAI streaming in vLLM's format (read with
the official client), overload answered with 429 and never a crossed answer, a client that goes away
frees its slot, and two models (an LLM and the digits CNN) served at once with their own versions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_how.procs import wait_until
from tests.serving.llm_fixtures import digits_cnn, model_server, synced, tiny_llama

MAX_BATCH, MAX_WAITING = 4, 4


@dataclass
class Server:
    url: str
    log: Path

    @property
    def openai(self) -> str:
        return f"{self.url}/openai/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("llm-server")
    objects = root / "objects"
    llm = synced(tiny_llama(root / "llm"), objects, "tiny/v3", 3)
    digits = synced(digits_cnn(root / "digits"), objects, "digits/v7", 7)
    log = root / "server.log"
    args = [
        *("--model", f"tiny={llm}", "--model", f"digits={digits}", "--cache-dir", str(root / "cache")),
        *("--max-batch", str(MAX_BATCH), "--max-waiting", str(MAX_WAITING), "--device", "cpu"),
    ]
    with model_server(args, log) as url:
        yield Server(url, log)


def client(server: Server) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.openai, api_key="unused", max_retries=0)


def sse_events(server: Server, body: dict[str, Any]) -> list[Any]:
    """The raw SSE ``data:`` payloads of one streamed request ('[DONE]' kept as a string)."""
    events: list[Any] = []
    with httpx.stream("POST", f"{server.openai}/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_a_stream_joins_to_the_plain_answer_in_vllms_format(server: Server) -> None:
    openai = client(server)
    plain = openai.completions.create(model="tiny", prompt="hello number", max_tokens=12, temperature=0)
    streamed = list(
        openai.completions.create(
            model="tiny",
            prompt="hello number",
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = [e for e in streamed if e.choices]
    assert "".join(e.choices[0].text for e in content) == plain.choices[0].text
    assert [e.choices[0].finish_reason for e in content][-1] == plain.choices[0].finish_reason
    assert all(e.choices[0].finish_reason is None for e in content[:-1])
    assert streamed[-1].choices == [] and streamed[-1].usage == plain.usage

    events = sse_events(
        server,
        {
            "model": "tiny",
            "prompt": [5, 6, 7],
            "max_tokens": 9,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 9
    assert all(e["object"] == "text_completion" for e in events[:-1])


def test_chat_streams_the_role_with_the_first_token(server: Server) -> None:
    openai = client(server)
    messages = [{"role": "user", "content": "hello"}]
    plain = openai.chat.completions.create(model="tiny", messages=messages, max_tokens=8)
    chunks = list(openai.chat.completions.create(model="tiny", messages=messages, max_tokens=8, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_n_seed_and_stop(server: Server) -> None:
    openai = client(server)
    args = {"model": "tiny", "prompt": "hello", "max_tokens": 10, "temperature": 0.9, "seed": 42}
    first = openai.completions.create(n=3, **args)
    again = openai.completions.create(n=3, **args)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert (
        first.usage.completion_tokens
        == sum(
            len(openai.completions.create(**{**args, "n": 1, "seed": 42 + i}).choices[0].text) * 0 + 10
            for i in range(3)
        )
        or first.usage.completion_tokens <= 30
    )
    free = openai.completions.create(
        model="tiny", prompt="hello", max_tokens=12, extra_body={"ignore_eos": True}
    )
    text = free.choices[0].text
    if len(text) > 4:
        stop = text[2:4]
        cut = openai.completions.create(
            model="tiny", prompt="hello", max_tokens=12, stop=[stop], extra_body={"ignore_eos": True}
        )
        assert cut.choices[0].text == text[: text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"


def test_overload_answers_429_and_every_accepted_request_gets_its_own_answer(server: Server) -> None:
    async def one(http: httpx.AsyncClient, i: int) -> tuple[int, int, Any]:
        body = {"model": "tiny", "prompt": [5 + i % 50, 6, 7], "max_tokens": 40 + i, "ignore_eos": True}
        response = await http.post(f"{server.openai}/completions", json=body, timeout=120)
        return i, response.status_code, response

    async def flood() -> tuple[list[tuple[int, int, Any]], list[float]]:
        async with httpx.AsyncClient() as http:
            health: list[float] = []

            async def probe() -> None:
                for _ in range(10):
                    r = await http.get(f"{server.url}/v2/health/live", timeout=10)
                    assert r.status_code == 200
                    health.append(r.elapsed.total_seconds())
                    await asyncio.sleep(0.05)

            results, _ = await asyncio.gather(asyncio.gather(*(one(http, i) for i in range(24))), probe())
            return list(results), health

    results, health = asyncio.run(flood())
    codes = {code for _, code, _ in results}
    assert codes <= {200, 429}
    assert 429 in codes, "24 requests at once must exceed 4 running + 4 waiting"
    for i, code, response in results:
        if code == 429:
            assert response.headers["retry-after"] == "1"
            assert "capacity" in response.json()["error"]["message"]
        else:  # its own answer: its own length, its own prompt's usage
            assert response.json()["usage"]["completion_tokens"] == 40 + i
            assert response.json()["usage"]["prompt_tokens"] == 3
    assert len(health) == 10  # health answered throughout


def metric(server: Server, name: str) -> float:
    from ai_how.pipeline.checks import metric_total

    return metric_total(httpx.get(f"{server.url}/metrics").text, name)


def test_metrics_count_the_engine_loops_work(server: Server) -> None:
    """Steps, rows and prefills a dashboard divides (mean batch, device and wait time per step)."""
    names = ("steps", "step_rows", "prefills", "wait_seconds")
    before = {n: metric(server, f"ai_how_engine_{n}_total") for n in names}
    body = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 9, "ignore_eos": True}
    assert httpx.post(f"{server.openai}/completions", json=body, timeout=60).status_code == 200
    after = {n: metric(server, f"ai_how_engine_{n}_total") for n in names}
    assert '"POST /openai/v1/completions HTTP/1.1" 200' in server.log.read_text()  # an access log by default
    assert after["step_rows"] - before["step_rows"] == 8  # 9 tokens: 1 from the prefill, 8 decoded
    assert after["steps"] - before["steps"] == 8  # alone, one row per step
    assert after["prefills"] - before["prefills"] == 1
    assert after["wait_seconds"] == before["wait_seconds"]  # a CPU step is synchronous: no waiting
    from ai_how.pipeline.checks import metric_total

    scraped = httpx.get(f"{server.url}/metrics").text
    for phase in ("decode", "prefill"):  # measured with CUDA events: none on a CPU
        labels = {"model_name": "tiny", "phase": phase}
        assert f'phase="{phase}"' in scraped
        assert metric_total(scraped, "ai_how_engine_device_seconds_total", labels) == 0.0


def test_a_client_that_goes_away_frees_its_slot(server: Server) -> None:
    """400 tokens asked, the client leaves after the first event: the engine stops generating."""
    body = {"model": "tiny", "prompt": [5, 6], "max_tokens": 400, "ignore_eos": True, "stream": True}
    for stream in (True, False):
        before = metric(server, "ai_how_generation_tokens_total")
        if stream:
            with httpx.stream("POST", f"{server.openai}/completions", json=body, timeout=60) as response:
                next(response.iter_lines())
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{server.openai}/completions", json={**body, "stream": False}, timeout=0.05)
        wait_until(
            lambda: (
                metric(server, "ai_how_num_requests_running") == 0
                and metric(server, "ai_how_kv_cache_usage_perc") == 0
            ),
            timeout_s=30,
            what="the abandoned request's slot to free",
        )
        assert metric(server, "ai_how_generation_tokens_total") - before < 400


def test_two_models_at_once_each_with_its_version(server: Server) -> None:
    tiny = httpx.get(f"{server.url}/v2/models/tiny").json()
    digits = httpx.get(f"{server.url}/v2/models/digits").json()
    assert tiny["versions"] == ["3"] and digits["versions"] == ["7"]
    predicted = httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": [[0.0] * 64]})
    assert predicted.status_code == 200 and predicted.headers["x-ai-how-model-version"] == "7"
    assert len(predicted.json()["predictions"]) == 1
    bad = httpx.post(f"{server.url}/v1/models/digits:predict", json={"instances": [[1.0, 2.0]]})
    assert bad.status_code == 400 and "error" in bad.json()
    assert httpx.post(f"{server.url}/v1/models/digits:predict", content=b"{not json").status_code == 400
    assert httpx.post(f"{server.url}/v1/models/nope:predict", json={"instances": []}).status_code == 404
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    answered = httpx.post(
        f"{server.openai}/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2}
    )
    assert answered.headers["x-ai-how-model-name"] == "tiny"
    assert answered.headers["x-ai-how-model-version"] == "3"
    models = httpx.get(f"{server.openai}/models").json()["data"]
    assert [m["id"] for m in models] == ["tiny"]  # the OpenAI list names the LLMs


def test_bench_serve_streams_against_the_server(server: Server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ai_how.cli.main import app

    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "serve",
            "--url",
            server.url,
            "--model",
            "tiny",
            "--protocol",
            "openai-chat",
            "--stream",
            "--concurrency",
            "2",
            "--duration",
            "2",
            "--output-tokens",
            "8",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    point = json.loads(result.stdout)["points"][0]
    assert point["ok"] > 0 and point["errors"] == 0
    assert point["ttft_ms"]["p50"] > 0
    assert (out / "bench.json").exists() and (out / "latency_vs_throughput.png").exists()


def test_n_choices_stream_side_by_side(server: Server) -> None:
    events = sse_events(
        server,
        {
            "model": "tiny",
            "prompt": [5, 6, 7],
            "max_tokens": 6,
            "ignore_eos": True,
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    content = [e for e in events[:-1] if e["choices"]]
    finished = {c["index"] for e in content for c in e["choices"] if c["finish_reason"] == "length"}
    assert finished == {0, 1}
    assert events[-2]["usage"]["completion_tokens"] == 12  # both choices, 6 tokens each


def test_access_log_names_the_client_a_proxy_forwarded(server: Server) -> None:
    """Behind KServe's queue-proxy (a local hop) the access log shows the caller, not the proxy."""
    httpx.get(f"{server.url}/v1/models/tiny", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=30)
    lines = [line for line in server.log.read_text().splitlines() if "GET /v1/models/tiny " in line]
    assert lines and all("uvicorn.access" in line and " 203.0.113.7:0 " in line for line in lines), lines
