"""Which torch device a model serves on: ``auto`` (the first GPU when torch sees one), ``cpu``, ``cuda[:N]``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ai_how.errors import AiHowError

DEVICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """Refuse a device name no machine has (before anything loads)."""
    if not _DEVICE.fullmatch(device):
        raise AiHowError(f"unknown device {device!r}", fix=f"use {DEVICES}")


def gpu_expected(device: str) -> bool:
    """Whether ``device`` will be a GPU, judged without importing torch (seconds of a server's
    start): 'cuda[:N]' is; 'auto' is when the NVIDIA driver is loaded (its /proc entry or device nodes)."""
    if device == "cpu":
        return False
    if device != "auto":
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):  # GPUs hidden
        return False
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def resolve_device(device: str) -> str:
    """The torch device to serve on: 'auto' is the first CUDA GPU when torch sees one, else the CPU."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device

    if not torch.cuda.is_available():
        raise AiHowError(
            f"device {device!r} was asked for but torch {torch.__version__} sees no CUDA GPU",
            fix="serve with device 'auto' or 'cpu', or on a machine with an NVIDIA GPU and a CUDA build of torch",
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise AiHowError(
            f"device {device!r} was asked for but torch sees {torch.cuda.device_count()} CUDA GPU(s)",
            fix="use 'cuda' (the first GPU) or a smaller index",
        )
    return device
