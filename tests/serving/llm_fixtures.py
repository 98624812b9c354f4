"""Models built from config (nothing downloaded) and a running model server, for serving and bench tests."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ai_how.workloads.llm_data import build_tiny_llama


def tiny_llama(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = root / "train.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"hello number {i}"},
                {"role": "assistant", "content": f"hi there {i}"},
            ]
        }
        for i in range(40)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return build_tiny_llama(data, root / "model")


def digits_cnn(out: Path, seed: int = 0) -> Path:
    """A digits CNN directory with random weights (the shape ai-how trains), nothing downloaded."""
    import torch

    from ai_how.workloads import cnn

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "arch": "simple-cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "scale": 16.0,
        "mean": 0.3,
        "std": 0.38,
        "dataset": "sklearn-digits",
    }
    torch.manual_seed(seed)
    torch.save(cnn.build(config).state_dict(), out / "model.pt")
    (out / "model_config.json").write_text(json.dumps(config))
    return out


def synced(model_dir: Path, objects: Path, prefix: str, version: int) -> str:
    """``model_dir`` synced (with its sha256 manifest) to a file:// store; the version's URI."""
    from ai_how.objectstore.base import open_store
    from ai_how.objectstore.sync import sync_directory

    store, _ = open_store(objects.as_uri())
    sync_directory(model_dir, store, prefix, meta={"version": version})
    return f"{objects.as_uri()}/{prefix}"


@contextlib.contextmanager
def model_server(args: list[str], log: Path, timeout_s: float = 180) -> Iterator[str]:
    """``python -m ai_how.serving.server ARGS`` on a free port until ready; its base URL."""
    from ai_how.procs import free_port, http_ok, wait_until

    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ai_how.serving.server", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: http_ok(f"{url}/v2/health/ready"),
            timeout_s=timeout_s,
            what="model server",
            alive=lambda: process.poll() is None,
            log_path=log,
        )
        yield url
    finally:
        process.terminate()
        process.wait(30)
