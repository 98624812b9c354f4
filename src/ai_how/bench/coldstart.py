"""``ai-how bench coldstart``: process start -> first answer of ``python -m ai_how.serving.server``, phase by phase.

Each run starts the server on a free port, polls the port, and sends the first request the moment it
accepts: a streamed OpenAI completion with ``max_tokens`` 1 for an LLM (timed to its first content
event), a V1 ``:predict`` of one digit for a classifier. The kind comes from the V2 model metadata
(``BYTES`` input: an LLM), else OpenAI is tried, then V1. The server prints one line
``startup-phases {"import_s", "fetch_s", "load_s", "warmup_s"}`` before it listens (plus, when an
LLM engine runs in its own process, that process's ``engine_import_s``, which overlaps the server's
import and fetch, and ``engine_device_s``, the CUDA context it creates once it is asked for the model,
before the weights load); without it the phases are unknown (null). The server is stopped with SIGTERM after
each run.

All runs of one command share a fresh model cache: the first run fetches and verifies the files, the
later ones find them (and the OS page cache) warm, so the first run is reported apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ai_how.bench.payloads import ZERO
from ai_how.bench.sse import SSEDecoder, StreamTiming
from ai_how.errors import AiHowError
from ai_how.procs import free_port, log_tail, port_open

PHASES_PREFIX = "startup-phases "
PHASES = ("import_s", "fetch_s", "load_s", "warmup_s", "engine_import_s", "engine_device_s")
STEPS = (*PHASES, "listening_s", "first_response_s", "total_s")
_POLL_S = 0.005
_STOP_GRACE_S = 30.0


def parse_phases(line: str) -> dict[str, float] | None:
    """The phases of a ``startup-phases {json}`` line (only the known keys with numbers); None for other lines."""
    if not line.startswith(PHASES_PREFIX):
        return None
    try:
        data = json.loads(line[len(PHASES_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {
        key: float(data[key])
        for key in PHASES
        if isinstance(data.get(key), int | float) and not isinstance(data.get(key), bool)
    }


def device_env(device: str) -> dict[str, str]:
    """Environment changes for ``--device``: auto/cuda leave it alone, cpu hides the GPUs, cuda:N picks one."""
    if device in ("auto", "cuda"):
        return {}
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    index = device.removeprefix("cuda:")
    if device.startswith("cuda:") and index.isdigit():
        return {"CUDA_VISIBLE_DEVICES": index}
    raise AiHowError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N", fix="e.g. --device cuda:0")


class Server:
    """The model server process: its stdout goes to a log file; the ``startup-phases`` line is parsed."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.phases: dict[str, float] | None = None
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                phases = parse_phases(raw.decode("utf-8", "replace").strip())
                if phases is not None and self.phases is None:
                    self.phases = phases

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failed(self, what: str) -> AiHowError:
        tail = log_tail(self.log_path, 15)
        return AiHowError(f"{what}" + (f":\n{tail}" if tail else ""), fix=f"see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after the grace period."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)


def _kind(client: Any, name: str) -> str | None:
    """'llm' or 'classifier' from the V2 model metadata; None when the server has none."""
    try:
        response = client.get(f"/v2/models/{name}")
    except Exception:
        return None
    if response.status_code != 200:
        return None
    inputs = response.json().get("inputs") or [{}]
    return "llm" if inputs[0].get("datatype") == "BYTES" else "classifier"


def _openai_first_token(client: Any, name: str) -> tuple[str, int]:
    """First answer of an OpenAI completion: ('openai-stream' | 'openai', HTTP status); 'openai' when the
    server refused to stream and answered the plain request."""
    body = {"model": name, "prompt": "Hello", "max_tokens": 1, "temperature": 0, "stream": True}
    with client.stream("POST", "/openai/v1/completions", json=body) as response:
        if response.status_code == 200:
            decoder, timing = SSEDecoder(), StreamTiming(0.0)
            for chunk in response.iter_bytes():
                for data in decoder.feed(chunk):
                    timing.on_data(data, 1.0)
                if timing.first_content is not None:
                    return "openai-stream", 200
            if timing.done or timing.completion_tokens is not None:
                return "openai-stream", 200
            return "openai", 200  # a JSON answer to a stream request still is a first response
        response.read()
        refused_stream = response.status_code == 400 and "stream" in response.text
    if refused_stream:
        plain = client.post("/openai/v1/completions", json=body | {"stream": False})
        return "openai", plain.status_code
    return "openai-stream", response.status_code


def first_answer(base: str, name: str, deadline: float) -> str:
    """Send the first request as soon as possible and return what answered it (the caller times it)."""
    import httpx

    with httpx.Client(base_url=base, timeout=httpx.Timeout(300.0, connect=5.0)) as client:
        kind = _kind(client, name)
        request = "openai"
        while time.perf_counter() < deadline:
            try:
                if kind in ("llm", None):
                    request, status = _openai_first_token(client, name)
                    if status == 200:
                        return request
                    if status == 404 and kind is None:
                        kind = "classifier"
                        continue
                else:
                    request = "v1"
                    status = client.post(f"/v1/models/{name}:predict", json={"instances": [ZERO]}).status_code
                    if status == 200:
                        return request
            except httpx.TransportError:
                status = 0  # accepted, then reset: not serving yet
            if status not in (0, 503):
                raise AiHowError(f"the first {request} request answered HTTP {status}")
            time.sleep(_POLL_S)
    raise AiHowError("the server listened but answered no request before the timeout")


def one_run(
    cmd: list[str], env: dict[str, str], log_path: Path, port: int, timeout_s: float
) -> dict[str, Any]:
    """Start the server, time it to listening and to its first answer, stop it."""
    server = Server(cmd, env, log_path)
    deadline = server.started + timeout_s
    try:
        while not port_open("127.0.0.1", port, timeout_s=0.05):
            if not server.alive():
                raise server.failed(f"the server exited with code {server.proc.returncode} before listening")
            if time.perf_counter() > deadline:
                raise server.failed(f"the server did not listen within {timeout_s:.0f} s")
            time.sleep(_POLL_S)
        listening = time.perf_counter()
        request = first_answer(f"http://127.0.0.1:{port}", cmd[cmd.index("--name") + 1], deadline)
        answered = time.perf_counter()
    finally:
        server.stop()
    phases = server.phases
    return {
        "request": request,
        "phases_reported": phases is not None,
        **{key: round(phases[key], 3) if phases and key in phases else None for key in PHASES},
        "listening_s": round(listening - server.started, 3),
        "first_response_s": round(answered - listening, 3),
        "total_s": round(answered - server.started, 3),
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in STEPS:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    return out


def coldstart(
    model_uri: str,
    name: str,
    *,
    config: Path | None = None,
    runs: int = 3,
    device: str = "auto",
    timeout_s: float = 900.0,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``runs`` cold starts; the report ``{"model_uri", "name", "device", "runs", "first", "warm"}``
    (``warm``: medians of runs 2.., None with one run)."""
    env = os.environ | device_env(device)
    work = Path(tempfile.mkdtemp(prefix="ai-how-coldstart-"))
    results = []
    try:
        for index in range(1, runs + 1):
            port = free_port()
            cmd = [sys.executable, "-m", "ai_how.serving.server", "--model-uri", model_uri, "--name", name]
            cmd += ["--port", str(port), "--cache-dir", str(work / "cache")]
            if config is not None:
                cmd += ["--config", str(config)]
            progress(f"cold start {index}/{runs}")
            result = one_run(cmd, env, work / f"server-{index}.log", port, timeout_s)
            results.append({"run": index, **result})
    finally:
        shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(
        work, ignore_errors=True
    )  # the logs are kept (and named in the error) only when a run failed
    return {
        "model_uri": model_uri,
        "name": name,
        "device": device,
        "runs": results,
        "first": results[0],
        "warm": _median(results[1:]) if len(results) > 1 else None,
    }
