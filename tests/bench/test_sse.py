"""The OpenAI stream parser on raw SSE bytes: events survive any chunking, TTFT/ITL/token counts follow vLLM.

The fixtures are streams in vLLM's shape (``vllm serve`` with ``stream_options.include_usage``):
``text_completion`` / ``chat.completion.chunk`` events with ``stop_reason``, the chat stream opening
with a role-only chunk, a final ``choices: []`` chunk carrying ``usage``, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_how.bench.sse import SSEDecoder, StreamTiming, content_text, timing_of

FIXTURES = Path(__file__).parent / "fixtures"
COMPLETIONS = (FIXTURES / "vllm_completions_stream.txt").read_bytes()
CHAT = (FIXTURES / "vllm_chat_stream.txt").read_bytes()


def events(raw: bytes) -> list[bytes]:
    """The stream split into its events, as a server writes them (one write per event)."""
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part]


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_any_chunking_yields_the_same_events(size: int) -> None:
    decoder = SSEDecoder()
    data = [d for i in range(0, len(COMPLETIONS), size) for d in decoder.feed(COMPLETIONS[i : i + size])]
    data += decoder.close()
    assert len(data) == 7 and data[-1] == "[DONE]"
    assert [content_text(json.loads(d)) for d in data[:5]] == [" Paris", ".", " It", " is", " the"]
    assert json.loads(data[5])["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings_even_split_between_chunks(newline: bytes) -> None:
    raw = COMPLETIONS.replace(b"\n", newline)
    decoder = SSEDecoder()
    data = [d for i in range(len(raw)) for d in decoder.feed(raw[i : i + 1])] + decoder.close()
    assert len(data) == 7 and data[-1] == "[DONE]"


def test_comments_other_fields_and_multiline_data() -> None:
    decoder = SSEDecoder()
    raw = b': keep-alive\n\nevent: message\nid: 3\ndata: {"a":\ndata: 1}\n\nretry: 10\n\n'
    assert decoder.feed(raw) == ['{"a":\n1}']


def test_a_stream_without_the_final_blank_line_keeps_its_last_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == ["[DONE]"]


def test_completion_timings_ttft_itl_and_usage_tokens() -> None:
    # event i arrives at 0.1 + 0.02 * i s after the request started at 0.
    chunks = [(0.1 + 0.02 * i, event) for i, event in enumerate(events(COMPLETIONS))]
    timing = timing_of(chunks, started=0.0)
    assert timing.ttft == pytest.approx(0.1)
    assert timing.gaps == pytest.approx([0.02] * 4)  # ITL: raw gaps between the 5 content events
    assert timing.content_events == 5 and timing.completion_tokens == 5 and timing.output_tokens == 5
    assert timing.done and timing.error is None


def test_chat_ttft_skips_the_role_only_chunk() -> None:
    chunks = [(0.05 * (i + 1), event) for i, event in enumerate(events(CHAT))]
    timing = timing_of(chunks)
    assert timing.ttft == pytest.approx(0.10)  # the 2nd event, 'Hello', not the role-only 1st
    assert timing.gaps == pytest.approx([0.05, 0.05])
    assert timing.output_tokens == 3


def test_events_in_one_network_chunk_share_its_arrival_time() -> None:
    timing = timing_of([(0.2, COMPLETIONS)])
    assert timing.ttft == pytest.approx(0.2)
    assert timing.gaps == pytest.approx([0.0] * 4)


def test_without_usage_the_content_events_are_the_token_count() -> None:
    raw = b"".join(e for e in events(COMPLETIONS) if b'"usage":{' not in e)
    timing = timing_of([(0.1, raw)])
    assert timing.completion_tokens is None and timing.output_tokens == 5


def test_usage_wins_over_coalesced_events() -> None:
    """A server that sends several tokens per event (--stream-interval) reports the true count in usage."""
    raw = b"".join(events(COMPLETIONS)[3:])  # 2 content events, usage says 5
    timing = timing_of([(0.1, raw)])
    assert timing.content_events == 2 and timing.output_tokens == 5


def test_error_event_and_non_json_payload_are_errors() -> None:
    timing = StreamTiming(0.0)
    timing.on_data('{"error": {"message": "KV cache full", "code": 503}}', 0.1)
    assert timing.error == "KV cache full" and timing.ttft is None
    broken = StreamTiming(0.0)
    broken.on_data("not json", 0.1)
    assert broken.error is not None and "not JSON" in broken.error
