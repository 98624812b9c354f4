"""Build an ``AsyncLLM`` for a model directory with the chosen engine and device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ENGINES = ("ours", "naive", "transformers")


def default_dtype(device: Any) -> Any:
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve(device: str, dtype: str) -> tuple[Any, Any]:
    """The torch device and dtype a model runs with (``auto`` dtype: bf16 on a GPU, fp32 on a CPU)."""
    import torch

    from ai_how.serving.devices import resolve_device

    target = torch.device(resolve_device(device))
    return target, default_dtype(target) if dtype == "auto" else getattr(torch, dtype)


def load_any_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer without transformers (``tokenizer.py``), or transformers' own for a
    checkpoint that ships no ``tokenizer.json``."""
    from ai_how.serving.engine.tokenizer import TokenizerUnavailable, load_tokenizer

    try:
        return load_tokenizer(model_dir)
    except TokenizerUnavailable:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir)


def load_hf_model(model_dir: Path, torch_dtype: Any) -> Any:
    """The HF model in eval mode, on the CPU (the baselines run transformers' own forward)."""
    from transformers import AutoModelForCausalLM

    lm: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
    lm.eval()
    return lm


def _limits(on_gpu: bool, max_batch: int | None, max_waiting: int | None) -> tuple[int, int]:
    """The engine's batch (512 on a GPU, 32 on a CPU) and its bounded queue: about four batches'
    worth of waiting, then 429 (an unbounded one only turns overload into minutes of latency)."""
    batch = max_batch or (512 if on_gpu else 32)
    return batch, max_waiting if max_waiting is not None else 4 * batch


def load_llm(
    model_dir: Path,
    name: str,
    engine: str = "ours",
    device: str = "auto",
    max_batch: int | None = None,
    max_waiting: int | None = None,
    metrics: Any = None,
    dtype: str = "auto",
    stream_interval: int = 1,
    process: str = "auto",
    share: Any = None,
    kv_cache_bytes: int | None = None,
) -> Any:
    """Load weights and tokenizer, build the engine; the caller warms it up and starts it.
    ``share`` (an ``EngineShare``): our engine's process serves several HTTP processes.

    With our engine in its own process (the GPU default) nothing here imports torch or transformers:
    the child loads the weights, and the HTTP process needs only the tokenizer (seconds of cold
    start and hundreds of MB per HTTP process)."""
    from ai_how.serving.devices import gpu_expected
    from ai_how.serving.engine import checkpoint
    from ai_how.serving.engine.frontend import AsyncLLM

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    if process not in ("auto", "yes", "no"):
        raise ValueError(f"engine process {process!r}: use auto, yes or no")
    model_dir = Path(model_dir)
    tokenizer = load_any_tokenizer(model_dir)
    eos = checkpoint.eos_ids(model_dir, tokenizer.eos_token_id)
    factory: Callable[[Any], Any]
    on_gpu = gpu_expected(device)
    if engine == "ours" and (process == "yes" or (process == "auto" and on_gpu)):
        from ai_how.serving.engine.process import EngineProcess, EngineSpec

        batch, waiting = _limits(on_gpu, max_batch, max_waiting)
        listen = share.address if share is not None and not share.attach else None
        key = share.key if share is not None else b""
        # the child loads the weights
        spec = EngineSpec(model_dir, device, dtype, batch, eos, listen, key, kv_cache_bytes)
        attach = share.address if share is not None and share.attach else None
        # The admission bound is the engine's: each of the HTTP processes sharing it takes its part.
        capacity = -(-(batch + waiting) // (share.processes if share is not None else 1))

        def factory(emit: Any) -> Any:
            return EngineProcess(spec, emit, capacity, attach)

        llm = AsyncLLM(factory, tokenizer, name, metrics, stream_interval=stream_interval)
    else:
        import torch

        target, torch_dtype = resolve(device, dtype)
        batch, waiting = _limits(target.type == "cuda", max_batch, max_waiting)
        if engine == "ours":
            from ai_how.serving.engine.core import Engine
            from ai_how.serving.engine.model import Decoder

            decoder = Decoder.load(model_dir, target, torch_dtype)

            def factory(emit: Any) -> Any:
                return Engine(
                    decoder, eos, emit, max_batch=batch, max_waiting=waiting, kv_cache_bytes=kv_cache_bytes
                )

        else:
            from ai_how.serving.engine import baselines

            lm = load_hf_model(model_dir, torch_dtype).to(target)
            cls = baselines.NaiveEngine if engine == "naive" else baselines.TransformersEngine

            def factory(emit: Any) -> Any:
                return cls(lm, eos, emit, max_batch=batch, max_waiting=waiting)

        with torch.inference_mode():
            llm = AsyncLLM(factory, tokenizer, name, metrics, stream_interval=stream_interval)
    vocab = int(checkpoint.read_config(model_dir).get("vocab_size") or 0)
    llm.vocab_size = vocab or len(tokenizer)  # the embedding's rows: larger ids would crash the step
    return llm
