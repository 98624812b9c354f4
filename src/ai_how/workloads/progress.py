"""Training progress while a job runs: one JSON line per logging step in ``<output>/progress.jsonl``.

Written by rank 0 of a workload, read by ``ai-how exporter pipeline`` (the last complete line). Each
line is appended with a single ``write`` on an ``O_APPEND`` descriptor, so a reader sees whole lines
or none; a half-written last line (no newline yet) is skipped. Line fields: ``time`` (epoch seconds),
``step``, ``total_steps``, ``loss``, ``samples_per_second`` and workload extras (``epoch``, ...).
No torch, no MLflow: the exporter imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"
_TAIL_BYTES = 8192


def append_progress(
    output: Path,
    *,
    step: int,
    total_steps: int,
    loss: float | None,
    samples_per_second: float | None,
    **extra: Any,
) -> None:
    """Append one progress line to ``output/progress.jsonl``."""
    record = {
        "time": round(time.time(), 3),
        "step": step,
        "total_steps": total_steps,
        "loss": loss,
        "samples_per_second": samples_per_second,
        **extra,
    }
    output.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(output / PROGRESS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def last_progress(path: Path) -> dict[str, Any] | None:
    """The last complete line of a progress file (None when there is none yet, or it cannot be read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    for raw in reversed(tail[: tail.rfind(b"\n") + 1].splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(raw)
            if isinstance(record, dict):
                return record
    return None


@contextlib.contextmanager
def relay_trainer_log(
    source: Path, output: Path, *, total_steps: int, samples_per_step: int, interval_s: float = 1.0
) -> Iterator[None]:
    """While the block runs, turn a Hugging Face trainer's JSONL log (Oumi's ``metrics_rank0000.jsonl``:
    ``{"loss", "step", "epoch", ...}`` per logging step) into progress lines with samples/s."""
    stop = threading.Event()
    relay = _TrainerLogRelay(source, output, total_steps, samples_per_step)

    def pump() -> None:
        while not stop.wait(interval_s):
            relay.poll()
        relay.poll()

    thread = threading.Thread(target=pump, name="progress-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


class _TrainerLogRelay:
    def __init__(self, source: Path, output: Path, total_steps: int, samples_per_step: int) -> None:
        self.source, self.output = source, output
        self.total_steps, self.samples_per_step = total_steps, samples_per_step
        self.offset = 0
        self.last: tuple[float, int] = (time.monotonic(), 0)  # (when, step) of the last relayed line

    def poll(self) -> None:
        try:
            with self.source.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        records = []
        for raw in complete.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(raw)
                if isinstance(record, dict) and "loss" in record and "step" in record:
                    records.append(record)
        if not records:
            return
        # Lines read in one poll share its wall-clock interval: one rate for all of them.
        now, (then, before) = time.monotonic(), self.last
        last_step = int(records[-1]["step"])
        rate = None
        if now > then and last_step > before:
            rate = round((last_step - before) * self.samples_per_step / (now - then), 3)
        self.last = (now, last_step)
        for record in records:
            append_progress(
                self.output,
                step=int(record["step"]),
                total_steps=self.total_steps,
                loss=float(record["loss"]),
                samples_per_second=rate,
                epoch=record.get("epoch"),
            )
