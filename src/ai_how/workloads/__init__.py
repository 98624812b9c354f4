"""Training programs that executors run (locally or as SLURM jobs), one module each.

Each module offers ``parser()`` and ``train(args) -> result``; ``python -m
ai_how.workloads NAME --output DIR`` runs one and writes ``DIR/model/``,
``DIR/metrics.json`` and ``DIR/result.json``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class WorkloadInfo:
    module: str
    kind: str  # "classifier" | "llm": decides the serving runtime and protocols
    summary: str


WORKLOADS: dict[str, WorkloadInfo] = {
    "digits-cnn": WorkloadInfo(
        "ai_how.workloads.digits_cnn",
        "classifier",
        "SimpleCNN on scikit-learn digits (or MNIST idx files), plain PyTorch",
    ),
    "llm-sft": WorkloadInfo(
        "ai_how.workloads.llm_sft",
        "llm",
        "supervised fine-tuning through Oumi (TRL_SFT) on a chat JSONL dataset",
    ),
}


def load(name: str) -> ModuleType:
    return importlib.import_module(WORKLOADS[name].module)
