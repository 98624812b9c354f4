"""What one benchmark request looks like per protocol: its route and its JSON body (pre-encoded).

OpenAI routes follow the OpenAI SDK's ``base_url``: a URL with a path (``http://host:8000/v1``, vLLM's)
is the OpenAI base itself; a bare ``http://host:port`` means ai-how's and KServe's ``/openai/v1``.
For the other protocols a URL path is a prefix (an ingress path) in front of the protocol route.
"""

from __future__ import annotations

import json
import random
from typing import Literal, get_args
from urllib.parse import urlsplit

Protocol = Literal["openai-completions", "openai-chat", "v1", "v2", "mlflow"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
OPENAI_PROTOCOLS = ("openai-completions", "openai-chat")
DEFAULT_OPENAI_BASE = "/openai/v1"

# A held-out sklearn digit (index 0 of the test split): a 0, raw pixel scale 0..16, row by row.
# fmt: off
ZERO = [
    0, 0, 5, 13, 9, 1, 0, 0,
    0, 0, 13, 15, 10, 15, 5, 0,
    0, 3, 15, 2, 0, 11, 8, 0,
    0, 4, 12, 0, 0, 8, 8, 0,
    0, 5, 8, 0, 0, 9, 8, 0,
    0, 4, 11, 0, 1, 12, 7, 0,
    0, 2, 14, 5, 10, 12, 0, 0,
    0, 0, 6, 13, 10, 0, 0, 0,
]
# fmt: on

# Words of the random chat prompts (about one token each for common tokenizers).
_WORD_TEXT = (
    "the quick brown fox jumps over a lazy dog while seven wise owls watch from an old oak tree "
    "near river bank under bright summer sky and children play games with red blue green yellow "
    "balls on soft grass before evening rain comes across hills toward small quiet town"
)
WORDS = tuple(_WORD_TEXT.split())

# Distinct bodies cycled through per load point (prompts differ, so no server cache answers them all).
BODY_POOL = 256


def split_url(url: str) -> tuple[str, str]:
    """``(scheme://host:port, path without the trailing slash)``; ValueError for anything but http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def route(protocol: str, model: str, prefix: str = "") -> str:
    """The request path of ``protocol`` for ``model`` under the URL path ``prefix``."""
    if protocol == "openai-completions":
        return f"{prefix or DEFAULT_OPENAI_BASE}/completions"
    if protocol == "openai-chat":
        return f"{prefix or DEFAULT_OPENAI_BASE}/chat/completions"
    if protocol == "v1":
        return f"{prefix}/v1/models/{model}:predict"
    if protocol == "v2":
        return f"{prefix}/v2/models/{model}/infer"
    if protocol == "mlflow":
        return f"{prefix}/invocations"
    raise ValueError(f"unknown protocol {protocol!r}")


def body(
    protocol: str, model: str, *, stream: bool, input_tokens: int, output_tokens: int, rng: random.Random
) -> dict[str, object]:
    """One request body; the random prompt comes from ``rng``."""
    if protocol in OPENAI_PROTOCOLS:
        request: dict[str, object] = {"model": model}
        if protocol == "openai-completions":
            request["prompt"] = [rng.randint(100, 1000) for _ in range(input_tokens)]
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(input_tokens))
            request["messages"] = [{"role": "user", "content": words}]
        request |= {"max_tokens": output_tokens, "ignore_eos": True, "temperature": 0, "stream": stream}
        if stream:
            request["stream_options"] = {"include_usage": True}
        return request
    if protocol == "v1":
        return {"instances": [ZERO]}
    if protocol == "v2":
        return {"inputs": [{"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ZERO}]}
    if protocol == "mlflow":
        # The registered digits pyfunc's signature is a float32 tensor of shape (-1, 64): one flat row.
        return {"inputs": [ZERO]}
    raise ValueError(f"unknown protocol {protocol!r}")


def bodies(
    protocol: str, model: str, *, stream: bool, input_tokens: int, output_tokens: int, seed: int
) -> list[bytes]:
    """``BODY_POOL`` encoded bodies (one for the protocols whose body never changes), seeded."""
    rng = random.Random(seed)
    count = BODY_POOL if protocol in OPENAI_PROTOCOLS else 1
    return [
        json.dumps(
            body(
                protocol,
                model,
                stream=stream,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                rng=rng,
            ),
            separators=(",", ":"),
        ).encode()
        for _ in range(count)
    ]
