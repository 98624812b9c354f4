"""Load benchmark of a running model server: latency percentiles and throughput at a given concurrency.

Sends a bounded number of requests (loopback only) to one protocol route and prints one JSON document:
p50/p95/p99 latency, requests/s (successes / wall-clock duration, not / summed latency), errors.

    python bench/serving.py --url http://127.0.0.1:8080 --model digits-cnn --protocol v1 -n 500 -c 8
    python bench/serving.py --url http://127.0.0.1:8080 --model llm-sft --protocol openai -n 100 -c 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

ZERO = [
    0,
    0,
    5,
    13,
    9,
    1,
    0,
    0,
    0,
    0,
    13,
    15,
    10,
    15,
    5,
    0,
    0,
    3,
    15,
    2,
    0,
    11,
    8,
    0,
    0,
    4,
    12,
    0,
    0,
    8,
    8,
    0,
    0,
    5,
    8,
    0,
    0,
    9,
    8,
    0,
    0,
    4,
    11,
    0,
    1,
    12,
    7,
    0,
    0,
    2,
    14,
    5,
    10,
    12,
    0,
    0,
    0,
    0,
    6,
    13,
    10,
    0,
    0,
    0,
]


def request_for(protocol: str, model: str, max_tokens: int) -> tuple[str, dict[str, Any]]:
    if protocol == "v1":
        return f"/v1/models/{model}:predict", {"instances": [ZERO]}
    if protocol == "v2":
        return f"/v2/models/{model}/infer", {
            "inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": ZERO}]
        }
    return "/openai/v1/chat/completions", {
        "model": model,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": max_tokens,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(url: str, model: str, protocol: str, total: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    path, body = request_for(protocol, model, max_tokens)
    local = threading.local()
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal errors
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=60)
        started = time.perf_counter()
        try:
            ok = client.post(path, json=body).status_code == 200
        except httpx.HTTPError:
            ok = False
        elapsed = time.perf_counter() - started
        with lock:
            if ok:
                latencies.append(elapsed)
            else:
                errors += 1

    for i in range(min(10, total)):  # warm-up, not counted
        one(i)
    latencies.clear()
    errors = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    wall = time.perf_counter() - started
    ms = [v * 1000 for v in latencies]
    return {
        "protocol": protocol,
        "requests": total,
        "concurrency": concurrency,
        "errors": errors,
        "p50_ms": round(percentile(ms, 0.50), 2) if ms else None,
        "p95_ms": round(percentile(ms, 0.95), 2) if ms else None,
        "p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "requests_per_s": round(len(ms) / wall, 1),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", required=True)
    parser.add_argument("--protocol", choices=["v1", "v2", "openai"], default="v1")
    parser.add_argument("-n", "--requests", type=int, default=500)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16, help="openai only")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("load goes to loopback servers only")
    print(
        json.dumps(
            run(args.url, args.model, args.protocol, args.requests, args.concurrency, args.max_tokens),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
