"""A tiny Llama with its own tokenizer, built from config (nothing downloaded), for engine and server tests."""

from __future__ import annotations

import json
from pathlib import Path

from ai_how.workloads.llm_data import build_tiny_llama


def tiny_llama(root: Path) -> Path:
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
