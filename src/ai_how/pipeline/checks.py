"""End-to-end checks of a deployed model version (the seed's e2e_test.py, MLOPS-5.1 step 5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from ai_how.objectstore.base import ObjectStoreError, open_store
from ai_how.objectstore.verified import verify_target
from ai_how.serving.server import VERSION_HEADER
from ai_how.tracking import PRODUCTION, Tracker

TIMEOUT = httpx.Timeout(120.0, connect=5.0)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CheckFailedError(Exception):
    """A check's condition does not hold (raised by ``expect``; never ``assert``, which ``python -O`` strips)."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def _check(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except CheckFailedError as exc:
        return Check(name, False, str(exc))
    except (httpx.HTTPError, ObjectStoreError, ValueError, KeyError, TypeError, IndexError) as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def metric_total(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a Prometheus metric's samples (optionally those matching ``labels``), parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = (labels or {}).items()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted)
    )


def digits_samples(count: int = 60, side: int = 8) -> tuple[list[list[float]], list[int]]:
    """Held-out sklearn digits (the training split's test part), raw pixel scale, upscaled to ``side``."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = [i for i in range(len(digits.target)) if i % 5 == 0][:count]
    factor = max(1, side // 8)
    images = [np.kron(digits.images[i], np.ones((factor, factor))).reshape(-1).tolist() for i in idx]
    return images, [int(digits.target[i]) for i in idx]


def protocol_checks(endpoint: str, model: str, kind: str) -> list[Check]:
    base = endpoint.rstrip("/")
    client = httpx.Client(timeout=TIMEOUT)
    checks = [
        _check(
            "health: /v2/health/ready", lambda: _expect_json(client.get(f"{base}/v2/health/ready"), "ready")
        )
    ]
    checks.append(
        _check("V2 metadata", lambda: _expect_json(client.get(f"{base}/v2/models/{model}"), "inputs"))
    )
    if kind == "classifier":
        shape = (
            client.get(f"{base}/v2/models/{model}").json().get("inputs", [{}])[0].get("shape", [-1, 1, 8, 8])
        )
        images, labels = digits_samples(side=int(shape[-1]))
        size = len(images[0])

        def v1() -> str:
            body = client.post(f"{base}/v1/models/{model}:predict", json={"instances": images})
            body.raise_for_status()
            predicted = body.json()["predictions"]
            accuracy = sum(int(p == t) for p, t in zip(predicted, labels, strict=True)) / len(labels)
            expect(accuracy >= 0.9, f"V1 held-out accuracy {accuracy:.3f} < 0.90")
            return f"{len(labels)} held-out digits, accuracy {accuracy:.3f}"

        def v2() -> str:
            flat = [v for image in images for v in image]
            request = {
                "id": "verify",
                "inputs": [
                    {"name": "input-0", "shape": [len(images), size], "datatype": "FP32", "data": flat}
                ],
            }
            body = client.post(f"{base}/v2/models/{model}/infer", json=request)
            body.raise_for_status()
            outputs = {o["name"]: o for o in body.json()["outputs"]}
            predicted = outputs["predictions"]["data"]
            accuracy = sum(int(p == t) for p, t in zip(predicted, labels, strict=True)) / len(labels)
            expect(accuracy >= 0.9, f"V2 held-out accuracy {accuracy:.3f} < 0.90")
            expect(outputs["probabilities"]["shape"] == [len(images), 10], "probabilities shape")
            return f"{len(labels)} held-out digits, accuracy {accuracy:.3f}"

        checks += [_check("V1 predict", v1), _check("V2 infer", v2)]
    else:

        def v1() -> str:
            body = client.post(
                f"{base}/v1/models/{model}:predict",
                json={"instances": ["Hello"], "parameters": {"max_new_tokens": 8}},
            )
            body.raise_for_status()
            (text,) = body.json()["predictions"]
            expect(isinstance(text, str), "prediction is not text")
            return f"{len(text)} characters"

        def v2() -> str:
            request = {
                "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hello"]}]
            }
            body = client.post(f"{base}/v2/models/{model}/infer", json=request)
            body.raise_for_status()
            expect(body.json()["outputs"][0]["datatype"] == "BYTES", "V2 output is not BYTES")
            return "BYTES output"

        def chat() -> str:
            body = client.post(
                f"{base}/openai/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "Hello, how are you?"}],
                    "max_completion_tokens": 8,
                    "temperature": 0,
                },
            )
            body.raise_for_status()
            data = body.json()
            expect(data["object"] == "chat.completion", "not a chat.completion")
            expect(isinstance(data["choices"][0]["message"]["content"], str), "no message content")
            expect(0 < data["usage"]["completion_tokens"] <= 8, "max_completion_tokens not honoured")
            return f"{data['usage']['completion_tokens']} tokens"

        def completion() -> str:
            body = client.post(
                f"{base}/openai/v1/completions", json={"model": model, "prompt": "Hello", "max_tokens": 4}
            )
            body.raise_for_status()
            data = body.json()
            expect(0 < data["usage"]["completion_tokens"] <= 4, "max_tokens not honoured")
            return f"{data['usage']['completion_tokens']} tokens"

        checks += [
            _check("V1 predict", v1),
            _check("V2 infer", v2),
            _check("OpenAI chat completions", chat),
            _check("OpenAI completions", completion),
        ]
    return checks


def _expect_json(response: httpx.Response, key: str) -> str:
    response.raise_for_status()
    data = response.json()
    expect(key in data, f"{response.request.url} answered without '{key}'")
    return f"{response.status_code}"


def served_version_check(client: httpx.Client, endpoint: str, model: str, version: int) -> Check:
    """The endpoint serves exactly ``version``: V2 metadata lists it and the response header names it."""

    def served() -> str:
        response = client.get(f"{endpoint.rstrip('/')}/v2/models/{model}")
        response.raise_for_status()
        listed = response.json().get("versions") or []
        header = response.headers.get(VERSION_HEADER)
        expect(
            listed == [str(version)] and header == str(version),
            f"the endpoint serves version {header or listed or 'unknown'}, not {version}",
        )
        return f"{model} v{version} (V2 metadata and {VERSION_HEADER})"

    return _check("served version", served)


def verify_deployment(
    *,
    tracker: Tracker,
    model: str,
    version: int,
    store_uri: str,
    store_config: Any,
    endpoint: str,
    kind: str,
    alias: str = PRODUCTION,
) -> list[Check]:
    """Served version, registry, object store (full read-back), protocols, and that the metrics moved."""
    checks: list[Check] = [served_version_check(httpx.Client(timeout=TIMEOUT), endpoint, model, version)]

    def registry() -> str:
        expect(version in tracker.versions(model), f"version {version} of {model} is not registered")
        current = tracker.alias_version(model, alias)
        expect(current == version, f"alias {alias} points at {current}, expected {version}")
        return f"{model} v{version} @{alias}"

    def store() -> str:
        backend, prefix = open_store(store_uri, store_config)
        manifest, problems = verify_target(backend, prefix)
        expect(not problems, "; ".join(f"{path}: {problem}" for path, problem in sorted(problems.items())))
        return f"{len(manifest.files)} files sha256-verified at {store_uri}"

    checks.append(_check("registry: version and alias", registry))
    checks.append(_check("object store: manifest sha256", store))
    metrics_url = f"{endpoint.rstrip('/')}/metrics"
    try:
        before = httpx.get(metrics_url, timeout=TIMEOUT).text
    except httpx.HTTPError:
        before = ""
    checks += protocol_checks(endpoint, model, kind)

    def metrics() -> str:
        after = httpx.get(metrics_url, timeout=TIMEOUT).text
        predicted = metric_total(
            after, "request_predict_seconds_count", {"model_name": model}
        ) - metric_total(before, "request_predict_seconds_count", {"model_name": model})
        served = metric_total(after, "ai_how_requests_total", {"code": "200"}) - metric_total(
            before, "ai_how_requests_total", {"code": "200"}
        )
        expect(predicted > 0, "request_predict_seconds_count did not move")
        expect(served > 0, "ai_how_requests_total did not move")
        return f"+{predicted:.0f} predictions, +{served:.0f} requests"

    checks.append(_check("metrics: counters moved", metrics))
    return checks
