"""An OpenAI stream as a benchmark sees it: raw SSE bytes -> ``data:`` payloads -> per-request token timings.

Follows vLLM's stream (``data: {json}`` events, a final ``choices: []`` chunk carrying ``usage``
when ``stream_options.include_usage`` is set, then ``data: [DONE]``). A content event is one whose
``choices`` is non-empty and carries text (``text`` for completions, ``delta.content`` for chat).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_NEWLINE = re.compile(rb"\r\n|\r|\n")


class SSEDecoder:
    """Splits a byte stream, fed in arbitrary chunks, into the ``data`` of its events.

    Lines end with CRLF, LF or CR; a blank line ends an event; comments (``:``) and fields other than
    ``data`` are ignored; several ``data`` lines of one event are joined with newlines.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event completed by ``chunk``."""
        self._buffer += chunk
        events: list[str] = []
        while True:
            match = _NEWLINE.search(self._buffer)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break  # possibly the first half of a CRLF split over two chunks
            line = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value.removeprefix(b" ").decode("utf-8", "replace"))
        return events

    def close(self) -> list[str]:
        """The data of an event the stream ended without a blank line after (lenient: it is kept)."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        self._buffer = b""
        return events


def content_text(event: dict[str, Any]) -> str:
    """The text an event carries ('' for role-only, usage-only and finish-only chunks)."""
    choices = event.get("choices")
    if not isinstance(choices, list):
        return ""
    pieces: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        text = choice.get("text")
        if text is None and isinstance(choice.get("delta"), dict):
            text = choice["delta"].get("content")
        if isinstance(text, str):
            pieces.append(text)
    return "".join(pieces)


@dataclass
class StreamTiming:
    """Token timings of one streamed response, fed event by event with the time each arrived."""

    started: float
    first_content: float | None = None
    last_content: float | None = None
    gaps: list[float] = field(default_factory=list)  # ITL: raw gaps between content events
    content_events: int = 0
    completion_tokens: int | None = None  # usage.completion_tokens of the final chunk, when sent
    done: bool = False  # data: [DONE] seen
    error: str | None = None  # an error event in the stream, or a payload that is not JSON

    def on_data(self, data: str, now: float) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            self.error = f"stream event is not JSON: {data[:80]!r}"
            return
        if not isinstance(event, dict):
            return
        if event.get("error"):
            error = event["error"]
            self.error = str(error.get("message", error) if isinstance(error, dict) else error)
        usage = event.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.completion_tokens = usage["completion_tokens"]
        if content_text(event):
            if self.last_content is not None:
                self.gaps.append(now - self.last_content)
            if self.first_content is None:
                self.first_content = now
            self.last_content = now
            self.content_events += 1

    @property
    def ttft(self) -> float | None:
        return None if self.first_content is None else self.first_content - self.started

    @property
    def output_tokens(self) -> int:
        """Tokens generated: ``usage.completion_tokens`` when the server sent it, else the content events."""
        return self.completion_tokens if self.completion_tokens is not None else self.content_events


def timing_of(chunks: Iterable[tuple[float, bytes]], started: float = 0.0) -> StreamTiming:
    """Timings of a stream given as ``(arrival time, raw bytes)`` chunks (what the load loop sees)."""
    decoder, timing = SSEDecoder(), StreamTiming(started)
    now = started
    for now, chunk in chunks:
        for data in decoder.feed(chunk):
            timing.on_data(data, now)
    for data in decoder.close():
        timing.on_data(data, now)
    return timing
