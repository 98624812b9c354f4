"""LLM serving metrics in vLLM's spirit, per model: requests running/waiting, KV-cache use,
time to first token, time per output token, generated and prompt tokens.

Gauges are read from each engine's stats when Prometheus scrapes (a collector), so the engine loop
never touches prometheus_client. KServe's own ``request_predict_seconds`` histogram is observed by
the routes around each request.

With several HTTP processes on one port (``--http-workers``) a scrape reaches any one of them, so
their counters and histograms live in prometheus_client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``, set by the first process before anything imports prometheus_client)
and every process answers ``/metrics`` with the sum over all (``shared_metrics_route``); the engine
gauges and token counters are the shared engine's own, the same in every process.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ai_how.serving.workers import MULTIPROC_ENV

TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


class LLMMetrics(Collector):
    """One per process; ``watch(name, engine)`` adds a model's engine to the gauges."""

    def __init__(self, registry: Any = REGISTRY) -> None:
        self.engines: dict[str, Any] = {}
        self.ttft = Histogram(
            "ai_how_time_to_first_token_seconds",
            "Time from request arrival to its first generated token",
            ["model_name"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "ai_how_time_per_output_token_seconds",
            "Mean time per output token after the first, per request",
            ["model_name"],
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        registry.register(self)

    def watch(self, name: str, engine: Any) -> None:
        self.engines[name] = engine

    def observe(self, what: str, model: str, seconds: float) -> None:
        (self.ttft if what == "ttft" else self.tpot).labels(model_name=model).observe(seconds)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        running = GaugeMetricFamily(
            "ai_how_num_requests_running", "Requests in the running batch", labels=["model_name"]
        )
        waiting = GaugeMetricFamily(
            "ai_how_num_requests_waiting", "Requests queued for a slot", labels=["model_name"]
        )
        kv = GaugeMetricFamily(
            "ai_how_kv_cache_usage_perc", "KV-cache slots in use (0-1)", labels=["model_name"]
        )
        prompt = CounterMetricFamily("ai_how_prompt_tokens", "Prompt tokens prefilled", labels=["model_name"])
        generated = CounterMetricFamily(
            "ai_how_generation_tokens", "Tokens generated (aborted requests' too)", labels=["model_name"]
        )
        # The engine loop's own work: mean batch = step_rows / steps; device time per phase against
        # wall time says how busy the device is; wait against wall time how busy the loop's host is.
        steps = CounterMetricFamily("ai_how_engine_steps", "Decode steps", labels=["model_name"])
        rows = CounterMetricFamily(
            "ai_how_engine_step_rows", "Rows (sequences) over all decode steps", labels=["model_name"]
        )
        prefills = CounterMetricFamily("ai_how_engine_prefills", "Batched prefills", labels=["model_name"])
        device = CounterMetricFamily(
            "ai_how_engine_device_seconds",
            "Device time of decode steps and prefills, from just before each is queued to its tokens' copy "
            "to the host (CUDA events: gaps the host leaves inside count too; 0 off the GPU)",
            labels=["model_name", "phase"],
        )
        wait = CounterMetricFamily(
            "ai_how_engine_wait_seconds",
            "The engine loop's time waiting for the device to finish a step",
            labels=["model_name"],
        )
        for name, engine in self.engines.items():
            stats = engine.stats
            running.add_metric([name], stats.running)
            waiting.add_metric([name], stats.waiting)
            kv.add_metric([name], stats.kv_usage)
            prompt.add_metric([name], stats.prompt_tokens)
            generated.add_metric([name], stats.generated_tokens)
            steps.add_metric([name], stats.steps)
            rows.add_metric([name], stats.step_rows)
            prefills.add_metric([name], stats.prefills)
            device.add_metric([name, "decode"], stats.decode_device_s)
            device.add_metric([name, "prefill"], stats.prefill_device_s)
            wait.add_metric([name], stats.wait_s)
        yield from (running, waiting, kv, prompt, generated, steps, rows, prefills, device, wait)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


@functools.cache
def llm_metrics() -> LLMMetrics:
    """The process's one LLMMetrics (prometheus_client refuses a metric registered twice)."""
    return LLMMetrics()


def shared_metrics_route() -> Callable[[Any], Awaitable[Any]] | None:
    """``GET /metrics`` summed over the HTTP processes, when they share a multiprocess directory."""
    if not os.environ.get(MULTIPROC_ENV):
        return None
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from starlette.responses import Response

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(llm_metrics())  # the engines' gauges: read live, the same in every process

    async def metrics(request: Any) -> Any:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def process_gone(pid: int) -> None:
    """Drop a dead HTTP process's live gauges from the shared files."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
