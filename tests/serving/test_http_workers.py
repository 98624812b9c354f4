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


def _completions(url: str, jobs: list[tuple[list[int], int]]) -> list[tuple[int, dict[str, Any]]]:
    """(prompt, max_tokens) requests all at once, a connection each (the kernel spreads connections
    over the processes)."""

    async def one(prompt: list[int], max_tokens: int) -> tuple[int, dict[str, Any]]:
        body = {
            "model": "tiny",
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{url}/openai/v1/completions", json=body, timeout=120)
        return response.status_code, response.json()

    async def all_at_once() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(one(p, n) for p, n in jobs)))

    return asyncio.run(all_at_once())


def _engine_key(pid: int) -> str:
    environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"AI_HOW_ENGINE_KEY="))


def _listeners(port: int) -> set[int]:
    """The pids listening on ``port`` (``ss`` from iproute2)."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout
    return {int(part.split(",")[0]) for part in out.split("pid=")[1:]}


def _running(url: str) -> float:
    return metric_total(httpx.get(f"{url}/metrics", timeout=10).text, "ai_how_num_requests_running")


def test_http_workers_share_one_engine(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    llm = synced(tiny_llama(tmp_path / "llm"), objects, "tiny/v3", 3)
    digits = synced(digits_cnn(tmp_path / "digits"), objects, "digits/v7", 7)
    port, production = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = [
        *(sys.executable, "-m", "ai_how.serving.server", "--port", str(port), "--device", "cpu"),
        *("--model", f"tiny={llm}", "--model", f"digits={digits}", "--cache-dir", str(tmp_path / "cache")),
        *("--http-workers", "2", "--max-batch", "8", "--max-waiting", "120", "--no-access-log"),
        *("--production-port", str(production)),
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
        worker = workers[0]
        engines_dir = Path(_cmdline(worker).split("--attach-engines")[1].split()[0])
        key = _engine_key(worker)  # the attach key travels in the environment, nowhere else
        assert len(key) == 64 and key not in _cmdline(worker) + _cmdline(server.pid) + log.read_text()
        assert not [p for p in _children(worker) if "spawn" in _cmdline(p)], "a worker runs no engine"

        jobs = [([5 + i, 6 + i % 7, 7 + i % 3], 6 + i % 5) for i in range(48)]
        alone = [_completions(url, [job])[0][1]["choices"][0]["text"] for job in jobs]
        before = _cpu_ticks(worker)
        answers = _completions(url, jobs)
        assert _cpu_ticks(worker) - before >= 3, "the worker served none of 48 connections"
        for (code, body), (_, max_tokens), lone in zip(answers, jobs, alone, strict=True):
            assert code == 200, body
            assert body["usage"] == {
                "prompt_tokens": 3,
                "completion_tokens": max_tokens,
                "total_tokens": 3 + max_tokens,
            }
            # its own answer, token for token what it gets alone (greedy), whichever process took it
            assert body["choices"][0]["text"] == lone
        # /metrics sums every process's counts, whichever process a scrape reaches; the engine's
        # gauges and token counters reach every process (within a 0.1 s heartbeat)
        generated = 2 * sum(n for _, n in jobs)
        for _ in range(6):
            scraped = httpx.get(f"{url}/metrics", timeout=10).text
            count = metric_total(
                scraped, "ai_how_requests_total", {"code": "200", "route": "/openai/v1/completions"}
            )
            assert count == 2 * 48, scraped
        wait_until(
            lambda: all(
                metric_total(httpx.get(f"{url}/metrics", timeout=10).text, "ai_how_generation_tokens_total")
                == generated
                for _ in range(6)
            ),
            timeout_s=5,
            what="every process to report exactly the engine's generated tokens",
        )
        assert "uvicorn.access" not in log.read_text(), "--no-access-log: no line per request"
        # the engine loop's counters reach every process too: each request's first token comes from
        # its prefill, every other token from one row of one decode step
        scraped = httpx.get(f"{url}/metrics", timeout=10).text
        assert metric_total(scraped, "ai_how_engine_step_rows_total") == generated - 2 * 48, scraped
        assert 1 <= metric_total(scraped, "ai_how_engine_prefills_total") <= 2 * 48
        v1 = httpx.post(f"{url}/v1/models/digits:predict", json={"instances": [[0.0] * 64]}, timeout=30)
        assert v1.status_code == 200 and len(v1.json()["predictions"]) == 1

        # promotion (the local deployer's switch): every HTTP process listens on the production port
        assert _listeners(port) == {server.pid, worker}
        server.send_signal(signal.SIGUSR1)
        wait_until(
            lambda: _listeners(production) == {server.pid, worker},
            timeout_s=10,
            what="both HTTP processes on the production port",
        )

        # a worker that goes away mid-request: the engine aborts its requests (slots freed at once)
        from ai_how.serving.engine.process import EngineProcess, EngineSpec
        from ai_how.serving.engine.protocol import SamplingParams

        spec = EngineSpec(engines_dir, "cpu", "auto", 8, set(), key=bytes.fromhex(key))
        attached = EngineProcess(spec, lambda updates: None, 4, attach=str(engines_dir / "tiny.sock"))
        attached.warm_up()
        attached.start()
        attached.submit([5, 6, 7], SamplingParams(max_tokens=attached.context_limit - 3, ignore_eos=True))
        wait_until(lambda: _running(url) == 1, timeout_s=10, what="the attached request to run")
        attached.stop()
        wait_until(lambda: _running(url) == 0, timeout_s=10, what="the gone worker's request to be aborted")

        os.kill(worker, signal.SIGKILL)  # the port stays served by the first process
        wait_until(lambda: "exited" in log.read_text(), timeout_s=10, what="the worker's death to be told")
        assert all(code == 200 for code, _ in _completions(url, jobs[:8]))
    finally:
        logged = len(log.read_text())
        server.terminate()
        server.wait(30)
    stopping = log.read_text()[logged:]  # a stop is quiet: no traceback, no engine reported lost
    assert "Traceback" not in stopping and "not ready" not in stopping, stopping
    assert not engines_dir.exists()  # the engine sockets' folder goes with the server
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


def test_the_kv_cache_budget_must_be_positive() -> None:
    from ai_how.serving.server import parse

    assert parse(["--model", "m=file:///x", "--kv-cache-gb", "6.5"]).kv_cache_gb == 6.5
    for bad in ("0", "-2"):
        with pytest.raises(SystemExit):
            parse(["--model", "m=file:///x", "--kv-cache-gb", bad])
