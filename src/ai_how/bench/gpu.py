"""GPU utilisation and memory, sampled every 0.5 s through NVML while a benchmark runs.

``pynvml`` (the ``nvidia-ml-py`` package) is imported lazily; without it, or without an NVIDIA GPU,
nothing is sampled and the report says so. NVML sees the GPUs of the machine the benchmark runs on,
so the figures describe the server only when the benchmark runs on the server's GPU host.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

NO_GPU = "no GPU sampled"


@dataclass
class Sample:
    at: float  # time.perf_counter()
    util_pct: list[int]
    mem_used_mib: list[float]


@dataclass
class GpuSampler:
    """A background thread sampling every GPU; ``summary(since, until)`` covers one window."""

    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    mem_total_mib: list[float] = field(default_factory=list)
    note: str | None = None  # why nothing is sampled
    _nvml: Any = None
    _handles: list[Any] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        try:
            pynvml = importlib.import_module("pynvml")  # nvidia-ml-py: optional, untyped
            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except ImportError:
            self.note = f"{NO_GPU} (pynvml is not installed: pip install nvidia-ml-py)"
            return self
        except Exception as exc:  # NVMLError: no driver, no GPU
            self.note = f"{NO_GPU} (NVML: {exc})"
            return self
        if not self._handles:
            self.note = f"{NO_GPU} (NVML found no GPU)"
            return self
        self._nvml = pynvml
        self.names = [str(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        self.mem_total_mib = [pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20 for h in self._handles]
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        nvml = self._nvml
        while not self._stop.is_set():
            try:
                util = [int(nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self._handles]
                mem = [nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in self._handles]
            except Exception as exc:  # a GPU fell off the bus mid-run: stop sampling, say why
                self.note = f"GPU sampling stopped (NVML: {exc})"
                return
            self.samples.append(Sample(time.perf_counter(), util, mem))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # shutting down NVML is best effort
                self._nvml.nvmlShutdown()
            self._nvml = None

    def __enter__(self) -> GpuSampler:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def summary(self, since: float, until: float) -> dict[str, Any] | None:
        """Per GPU: mean and max utilisation (%), max memory used (MiB) over samples in [since, until]."""
        window = [s for s in self.samples if since <= s.at <= until]
        if not window:
            return None
        gpus = []
        for i, name in enumerate(self.names):
            util = [s.util_pct[i] for s in window]
            gpus.append(
                {
                    "index": i,
                    "name": name,
                    "util_mean_pct": round(sum(util) / len(util), 1),
                    "util_max_pct": max(util),
                    "mem_used_max_mib": round(max(s.mem_used_mib[i] for s in window), 1),
                    "mem_total_mib": round(self.mem_total_mib[i], 1),
                }
            )
        return {"samples": len(window), "gpus": gpus}
