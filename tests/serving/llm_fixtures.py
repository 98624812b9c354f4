"""A tiny Llama with its own tokenizer, built from config (nothing downloaded), for engine and server tests."""

from __future__ import annotations

import json
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
