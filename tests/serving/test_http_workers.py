"""Several HTTP processes on one port sharing one engine process (``--http-workers``): every answer
is its own and the same as from one process, the workers really serve, a worker's death leaves the
port served, and the workers go when the server goes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_how.pipeline.checks import metric_total
from ai_how.procs import free_port, http_ok, wait_until
from tests.serving.llm_fixtures import digits_cnn, synced, tiny_llama


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


def _cpu_ticks(pid: int) -> int:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _completions(url: str, prompts: list[list[int]]) -> list[tuple[int, dict[str, Any]]]:
    async def one(prompt: list[int], i: int) -> tuple[int, dict[str, Any]]:
        body = {
            "model": "tiny",
            "prompt": prompt,
            "max_tokens": 6 + i % 5,
            "temperature": 0,
            "ignore_eos": True,
        }
        async with (
            httpx.AsyncClient() as http
        ):  # a connection each: the kernel spreads them over the processes
            response = await http.post(f"{url}/openai/v1/completions", json=body, timeout=120)
        return response.status_code, response.json()

    async def all_at_once() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(one(p, i) for i, p in enumerate(prompts))))

    return asyncio.run(all_at_once())


def test_http_workers_share_one_engine(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    llm = synced(tiny_llama(tmp_path / "llm"), objects, "tiny/v3", 3)
    digits = synced(digits_cnn(tmp_path / "digits"), objects, "digits/v7", 7)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = [
        *(sys.executable, "-m", "ai_how.serving.server", "--port", str(port), "--device", "cpu"),
        *("--model", f"tiny={llm}", "--model", f"digits={digits}", "--cache-dir", str(tmp_path / "cache")),
        *("--http-workers", "2", "--max-batch", "8", "--max-waiting", "120", "--no-access-log"),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: http_ok(f"{url}/v2/health/ready") and "HTTP worker of" in log.read_text(),
            timeout_s=240,
            what="the server and its HTTP worker",
            alive=lambda: server.poll() is None,
            log_path=log,
        )
        workers = [p for p in _children(server.pid) if "--attach-engines" in _cmdline(p)]
        assert len(workers) == 1, log.read_text()
        assert "AI_HOW_ENGINE_KEY" not in _cmdline(workers[0])  # the key travels in the environment
        worker = workers[0]

        prompts = [[5 + i, 6 + i % 7, 7 + i % 3] for i in range(48)]
        alone = [_completions(url, [p])[0][1]["choices"][0]["text"] for p in prompts[:6]]
        before = _cpu_ticks(worker)
        answers = _completions(url, prompts)
        assert _cpu_ticks(worker) - before >= 3, "the worker served none of 48 connections"
        for i, (code, body) in enumerate(answers):
            assert code == 200, body
            assert body["usage"] == {
                "prompt_tokens": 3,
                "completion_tokens": 6 + i % 5,
                "total_tokens": 9 + i % 5,
            }
        # greedy answers are the same whichever process took the request, alone or among 48 (alone:
        # 6 tokens; among them request i asked for 6 + i % 5, so its answer continues the lone one)
        for lone, (_, body) in zip(alone, answers[:6], strict=True):
            assert body["choices"][0]["text"].startswith(lone)
        # /metrics sums every process's counts, whichever process a scrape reaches; the engine's
        # gauges and token counters reach every process (within a 0.1 s heartbeat)
        generated = 6 * 6 + sum(6 + i % 5 for i in range(48))
        for _ in range(6):
            scraped = httpx.get(f"{url}/metrics", timeout=10).text
            count = metric_total(
                scraped, "ai_how_requests_total", {"code": "200", "route": "/openai/v1/completions"}
            )
            assert count == 6 + 48, scraped
        wait_until(
            lambda: all(
                metric_total(httpx.get(f"{url}/metrics", timeout=10).text, "ai_how_generation_tokens_total")
                >= generated
                for _ in range(6)
            ),
            timeout_s=5,
            what="every process to report the engine's generated tokens",
        )
        v1 = httpx.post(f"{url}/v1/models/digits:predict", json={"instances": [[0.0] * 64]}, timeout=30)
        assert v1.status_code == 200 and len(v1.json()["predictions"]) == 1

        os.kill(worker, signal.SIGKILL)  # the port stays served by the first process
        wait_until(lambda: "exited" in log.read_text(), timeout_s=10, what="the worker's death to be told")
        assert all(code == 200 for code, _ in _completions(url, prompts[:8]))
    finally:
        server.terminate()
        server.wait(30)
    # the workers go with it: nothing attached to the engine socket or left on the port
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and http_ok(f"{url}/v2/health/live"):
        time.sleep(0.2)
    assert not http_ok(f"{url}/v2/health/live")


def test_http_workers_need_our_engine(tmp_path: Path) -> None:
    from ai_how.serving.server import parse

    with pytest.raises(SystemExit):
        parse(["--model", "m=file:///x", "--http-workers", "2", "--engine", "naive"])
    assert parse(["--model", "m=file:///x", "--http-workers", "2"]).engine_process == "yes"
