"""``ai-how bench serve`` and ``ai-how bench coldstart`` against the real model server on a digits CNN.

The model is an untrained SimpleCNN (the load does not depend on its accuracy), synced with a
sha256 manifest into a ``file://`` store, served by ``python -m ai_how.serving.server``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from ai_how.bench.loadgen import send_requests
from ai_how.bench.payloads import ZERO, bodies
from ai_how.cli.main import app
from ai_how.procs import free_port
from tests.serving.llm_fixtures import digits_cnn, model_server, synced

runner = CliRunner()


def bench(command: str, args: str) -> Result:
    """``ai-how bench COMMAND ARGS`` (ARGS split on spaces)."""
    return runner.invoke(app, ["bench", command, *args.split()])


@dataclass
class Served:
    url: str
    model_uri: str


def write_digits_model(root: Path) -> str:
    """A digits CNN model directory synced to ``root/objects``; its model URI."""
    return synced(digits_cnn(root / "model"), root / "objects", "digits/v1", 1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("bench")
    uri = write_digits_model(root)
    args = ["--model-uri", uri, "--name", "digits", "--cache-dir", str(root / "cache")]
    with model_server(args, root / "server.log", timeout_s=120) as url:
        yield Served(url, uri)


def requests_counted(url: str) -> float:
    from ai_how.pipeline.checks import metric_total

    text = httpx.get(f"{url}/metrics").text
    return metric_total(
        text, "ai_how_requests_total", {"route": "/v1/models/{model_name}:predict", "code": "200"}
    )


def test_bench_serve_closed_loop_writes_json_markdown_and_plot(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench(
        "serve",
        f"--url {served.url} --model digits --protocol v1 --concurrency 2 --duration 2 --warmup 0.5 "
        f"--out {out} --json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["compare"] is None
    (point,) = report["points"]
    assert point["point"] == "c=2" and point["ok"] > 0
    assert point["errors"] == 0 and point["timeouts"] == 0 and point["throttled"] == 0
    latency = point["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert point["requests_per_s"] > 0 and point["connections"] == 2
    assert point["ttft_ms"] is None  # not streamed
    assert json.loads((out / "bench.json").read_text()) == report
    markdown = (out / "bench.md").read_text()
    assert "| point |" in markdown and "| c=2 |" in markdown
    assert (out / "latency_vs_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_serve_open_loop_and_compare_another_protocol(served: Served) -> None:
    result = bench(
        "serve",
        f"--url {served.url} --model digits --protocol v1 --rate 20 --duration 1 --warmup 0 "
        f"--compare {served.url} --compare-protocol v2 --json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (point,) = report["points"]
    (other,) = report["compare"]["points"]
    for p in (point, other):
        assert p["point"] == "r=20/s" and p["ok"] > 0 and p["errors"] == 0 and p["scheduled_rps"] > 0
    assert report["compare"]["endpoint"]["path"] == "/v2/models/digits/infer"
    (ratio,) = report["compare"]["ratios"]
    assert ratio["point"] == "r=20/s" and ratio["throughput_ratio"] > 0 and ratio["p95_ratio"] > 0
    assert report["client_capacity_rps"] > 0


def test_terminal_table(served: Served) -> None:
    result = bench(
        "serve", f"--url {served.url} --model digits --protocol v2 --concurrency 1 --duration 0.5 --warmup 0"
    )
    assert result.exit_code == 0, result.output
    assert "c=1" in result.output and "p95 ms" in result.output
    assert "no GPU sampled" in result.output or "GPU util" in result.output


def test_processes_share_a_point_and_merge_into_one(served: Served) -> None:
    before = requests_counted(served.url)
    result = bench(
        "serve",
        f"--url {served.url} --model digits --protocol v1 --concurrency 3 --duration 1 --warmup 0 "
        "--processes 2 --json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["settings"]["processes"] == 2
    (point,) = report["points"]
    assert point["point"] == "c=3" and len(point["workers"]) == 2
    assert [w["connections"] for w in point["workers"]] == [2, 1] and point["connections"] == 3
    assert point["issued"] == sum(w["issued"] for w in point["workers"]) > 0
    assert point["ok"] == point["issued"] and point["errors"] == 0 and point["timeouts"] == 0
    assert point["latency_ms"]["p50"] <= point["latency_ms"]["p99"]
    # No warm-up: every request of both processes was measured; the server counted them (and the preflight).
    assert requests_counted(served.url) - before == point["issued"] + 1


def test_a_failing_load_process_fails_the_point_in_one_line(served: Served) -> None:
    from ai_how.bench.loadgen import Target
    from ai_how.bench.records import LoadPoint
    from ai_how.bench.workers import LoadProcesses
    from ai_how.errors import AiHowError

    timing: dict[str, Any] = {"duration_s": 0.5, "warmup_s": 0.0, "grace_s": 1.0, "max_in_flight": 4}
    with LoadProcesses(2) as run, pytest.raises(AiHowError) as failed:
        run(Target(served.url, "digits", "grpc"), LoadPoint("concurrency", 2), **timing)
    assert re.fullmatch(
        r"c=2: load process [12] of 2 failed: ValueError: unknown protocol 'grpc'", failed.value.message
    )
    with LoadProcesses(2) as run, pytest.raises(AiHowError) as killed:
        os.kill(run.pids[1] or 0, signal.SIGKILL)
        run(Target(served.url, "digits", "v1"), LoadPoint("concurrency", 2), **timing)
    assert killed.value.message.endswith("load process 2 of 2 was killed by SIGKILL"), killed.value.message


def test_send_requests_sends_exactly_the_count(served: Served) -> None:
    before = requests_counted(served.url)
    summary = send_requests(served.url, "digits", "v1", total=25, concurrency=4)
    assert summary["ok"] == 25 and summary["errors"] == 0
    assert requests_counted(served.url) - before == 25


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--duration", "1"], "exactly one of --concurrency and --rate"),
        (["--duration", "1", "--concurrency", "2", "--rate", "5"], "exactly one of --concurrency and --rate"),
        (["--duration", "1", "--concurrency", "0"], "--concurrency '0' must be positive integers"),
        (["--duration", "1", "--rate", "fast"], "--rate 'fast' must be positive numbers"),
        (["--duration", "0", "--concurrency", "1"], "--duration 0 must be positive"),
        (["--duration", "1", "--concurrency", "1", "--protocol", "grpc"], "--protocol 'grpc' is not one of"),
        (["--duration", "1", "--concurrency", "1", "--protocol", "v1", "--stream"], "--stream applies to"),
        (["--duration", "1", "--concurrency", "1", "--processes", "0"], "--processes '0' must be a positive"),
    ],
)
def test_bad_options_fail_in_one_line(args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["bench", "serve", "--url", "http://127.0.0.1:9", "--model", "m", *args])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.output
    assert "Traceback" not in result.output


def test_unreachable_url_and_unknown_model_fail_in_one_line(served: Served) -> None:
    nothing = f"http://127.0.0.1:{free_port()}"
    result = bench("serve", f"--url {nothing} --model digits --protocol v1 --concurrency 1 --duration 1")
    assert result.exit_code == 1 and f"error: cannot reach {nothing}" in result.output, result.output
    missing = bench("serve", f"--url {served.url} --model nope --protocol v1 --concurrency 1 --duration 1")
    assert missing.exit_code == 1 and "error: model 'nope' not found" in missing.output, missing.output
    assert "Traceback" not in result.output + missing.output


def test_payloads_match_what_the_servers_expect() -> None:
    """V1/V2 go to the real server above; MLflow's own parser and the registered signature check the
    pyfunc payload; the OpenAI body carries what vLLM's benchmark sends."""
    import numpy as np
    from mlflow.models.utils import _enforce_schema
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from ai_how.mlflow_models import digits_signature

    (mlflow_body,) = bodies("mlflow", "digits", stream=False, input_tokens=32, output_tokens=64, seed=0)
    schema = digits_signature({"input_shape": [1, 8, 8]}).inputs
    parsed = _enforce_schema(infer_and_parse_data(json.loads(mlflow_body), schema), schema)
    assert parsed.dtype == np.float32 and parsed.shape == (1, 64) and parsed.ravel().tolist() == ZERO

    first, second, *_ = bodies(
        "openai-completions", "m", stream=True, input_tokens=32, output_tokens=64, seed=0
    )
    request = json.loads(first)
    assert len(request["prompt"]) == 32 and all(100 <= t <= 1000 for t in request["prompt"])
    assert request["max_tokens"] == 64 and request["ignore_eos"] is True and request["temperature"] == 0
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert json.loads(second)["prompt"] != request["prompt"]  # distinct prompts: no cache answers them all
    assert (
        bodies("openai-completions", "m", stream=True, input_tokens=32, output_tokens=64, seed=0)[0] == first
    )
    chat = json.loads(bodies("openai-chat", "m", stream=False, input_tokens=8, output_tokens=4, seed=0)[0])
    assert len(chat["messages"][0]["content"].split()) == 8 and "stream_options" not in chat


def test_coldstart_reports_each_run(served: Served) -> None:
    result = runner.invoke(
        app,
        ["bench", "coldstart", "--model-uri", served.model_uri, "--name", "digits", "--runs", "2", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [run["run"] for run in report["runs"]] == [1, 2] and report["first"] == report["runs"][0]
    for run in report["runs"]:
        assert run["request"] == "v1"
        assert 0 < run["listening_s"] < run["total_s"]
        assert run["total_s"] == pytest.approx(run["listening_s"] + run["first_response_s"], abs=0.002)
        phases = [run[key] for key in ("import_s", "fetch_s", "load_s", "warmup_s")]
        assert all(v is not None for v in phases) if run["phases_reported"] else phases == [None] * 4
        assert run["engine_import_s"] is None and run["engine_device_s"] is None  # no engine process
    assert report["warm"]["total_s"] == report["runs"][1]["total_s"]


def test_coldstart_bad_input_fails_in_one_line(tmp_path: Path) -> None:
    bad_device = runner.invoke(
        app, ["bench", "coldstart", "--model-uri", "file:///x", "--name", "d", "--device", "tpu"]
    )
    assert bad_device.exit_code == 1 and "error: --device 'tpu'" in bad_device.output
    missing = runner.invoke(
        app, ["bench", "coldstart", "--model-uri", (tmp_path / "none").as_uri(), "--name", "d", "--runs", "1"]
    )
    assert missing.exit_code == 1, missing.output
    assert "error: the server exited with code 3 before listening" in missing.output, missing.output
