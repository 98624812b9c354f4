"""The OpenAI-compatible routes on a real tiny LM: token limits, errors, latency histogram."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ai_how.serving import openai_routes
from ai_how.serving.runtimes import LLMModel
from tests.serving.llm_fixtures import tiny_llama


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    model = LLMModel("tiny", tiny_llama(tmp_path_factory.mktemp("lm")))
    model.load()
    app = FastAPI()
    openai_routes.register(app, {"tiny": model})
    return TestClient(app)


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(f"/openai/v1/{path}", json=body)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_both_token_limits_are_honoured(client: TestClient, field: str) -> None:
    response = post(
        client,
        "chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], field: 3},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 3
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_completions(client: TestClient) -> None:
    body = post(client, "completions", {"model": "tiny", "prompt": "hello", "max_tokens": 2}).json()
    assert body["object"] == "text_completion" and isinstance(body["choices"][0]["text"], str)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("chat/completions", {"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404),
        ("chat/completions", {"messages": []}, 400),
        ("chat/completions", {"messages": [{"role": "user"}]}, 400),
        ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 99}, 400),
        ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, 400),
        ("completions", {"prompt": 5}, 400),
        ("completions", {"prompt": "x", "seed": 2**64, "temperature": 1.0}, 400),
        ("completions", {"prompt": "x", "n": 2, "stop": [1, 2]}, 400),
        ("completions", ["not", "an", "object"], 400),
    ],
)
def test_bad_requests_get_openai_errors(client: TestClient, path: str, body: Any, status: int) -> None:
    response = post(client, path, body)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_latency_lands_in_kserve_histogram(client: TestClient) -> None:
    from kserve.metrics import PREDICT_HIST_TIME

    def count() -> float:
        return sum(
            s.value
            for m in PREDICT_HIST_TIME.collect()
            for s in m.samples
            if s.name.endswith("_count") and s.labels.get("model_name") == "tiny"
        )

    before = count()
    post(client, "completions", {"prompt": "hi", "max_tokens": 1})
    assert count() == before + 1


def test_models_list(client: TestClient) -> None:
    assert [m["id"] for m in client.get("/openai/v1/models").json()["data"]] == ["tiny"]
