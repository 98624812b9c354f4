"""KServe models for what ai-how trains: one ``predict`` per model answering V1 (dict) and V2 (InferRequest).

The same classes run in the local server and in a KServe pod (a custom predictor
container runs ``python -m ai_how.serving.server``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InferenceError, InvalidInput


def model_kind(model_dir: Path) -> str:
    """'classifier' (model_config.json) or 'llm' (an HF directory)."""
    marker = model_dir / "ai_how_model.json"
    if marker.exists():
        return str(json.loads(marker.read_text()).get("kind", "llm"))
    if (model_dir / "model_config.json").exists():
        return "classifier"
    if (model_dir / "config.json").exists():
        return "llm"
    raise InvalidInput(f"{model_dir} holds no model ai-how can serve")


class GenerationFailed(InferenceError):
    """The engine failed a request after accepting it (KServe answers InferenceError with 500)."""


@dataclass(frozen=True)
class ServeOptions:
    """How this server runs its models (``--device``, ``--engine``, ``--max-batch``, ``--max-waiting``)."""

    device: str = "auto"
    engine: str = "ours"
    max_batch: int | None = None  # None: 512 on a GPU, 32 on a CPU
    max_waiting: int | None = None  # None: four batches' worth
    stream_interval: int = 1  # tokens per streamed event once the first token is out
    engine_process: str = "auto"  # our engine in a child process: auto = on a GPU
    engines_dir: str | None = None  # where shared engine processes listen (several HTTP processes)
    attach: bool = False  # an HTTP worker: attach to the engines there instead of running them
    http_processes: int = 1
    kv_cache_gb: float | None = None  # None: half the free GPU memory (2 GiB on a CPU)


class LLMModel(Model):
    """A causal LM (HF directory saved by Oumi) on one of the engines in ``ai_how.serving.engine``.

    V1 takes ``{"instances": [prompt, ...], "parameters": {...}}`` and V2 a BYTES input of prompts;
    all prompts of a request run concurrently in the engine's batch. OpenAI routes: openai_routes.
    """

    def __init__(self, name: str, model_dir: Path, options: ServeOptions | None = None) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.options = options or ServeOptions()
        self.llm: Any = None
        self.phases: dict[str, float] = {}

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def load(self) -> bool:
        from ai_how.serving.engine.loader import load_llm
        from ai_how.serving.metrics import llm_metrics

        metrics = llm_metrics()
        started = time.monotonic()
        self.llm = load_llm(
            self.model_dir,
            self.name,
            engine=self.options.engine,
            device=self.options.device,
            max_batch=self.options.max_batch,
            max_waiting=self.options.max_waiting,
            metrics=metrics,
            stream_interval=self.options.stream_interval,
            process=self.options.engine_process,
            share=self._share(),
            kv_cache_bytes=None
            if self.options.kv_cache_gb is None
            else int(self.options.kv_cache_gb * 2**30),
        )
        loaded = time.monotonic()
        self.llm.engine.warm_up()
        self.phases = getattr(self.llm.engine, "phases", None) or {
            "load_s": loaded - started,
            "warmup_s": time.monotonic() - loaded,
        }
        self.llm.start()
        metrics.watch(self.name, self.llm.engine)
        if hasattr(self.llm.engine, "on_gone"):  # an engine process that dies: not ready, say why
            self.llm.engine.on_gone.append(self._engine_gone)
        self.ready = True
        return True

    def _share(self) -> Any:
        """How this model's engine is shared by the server's HTTP processes (None: not shared)."""
        options = self.options
        if options.engines_dir is None:
            return None
        import os

        from ai_how.serving.engine.process import EngineShare
        from ai_how.serving.workers import KEY_ENV

        key = bytes.fromhex(os.environ.get(KEY_ENV, ""))
        address = str(Path(options.engines_dir) / f"{self.name}.sock")
        return EngineShare(address, key, options.attach, options.http_processes)

    def _engine_gone(self, why: str) -> None:
        self.ready = False
        print(
            f"error: model {self.name}: {why}; the server reports it not ready", file=sys.stderr, flush=True
        )

    def stop(self) -> None:
        if self.llm is not None:
            self.llm.stop()

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]

    def chat_prompt(self, messages: Any) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise InvalidInput("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
                raise InvalidInput("each message needs 'role' and a string 'content'")
        text = str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return self.encode(text)

    def encode(self, prompt: Any) -> list[int]:
        """A prompt as token ids: text, or a list of token ids (as OpenAI's completions accept)."""
        if isinstance(prompt, str):
            ids: list[int] = self.llm.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
            ids = prompt
            vocab = self.llm.vocab_size
            if any(not 0 <= t < vocab for t in ids):
                raise InvalidInput(f"token ids must be between 0 and {vocab - 1}")
        else:
            raise InvalidInput("prompt must be a string or a list of token ids")
        if not ids:
            raise InvalidInput("prompt is empty")
        return ids

    async def complete(self, prompt: list[int], params: Any) -> Any:
        """One answer; a limit the engine refuses becomes InvalidInput (400), a full queue EngineFull,
        an engine failure mid-answer GenerationFailed (500: never a truncated answer passed as whole)."""
        try:
            answer = await self.llm.complete(prompt, params)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if answer.finish in ("error", "abort"):
            raise GenerationFailed(f"the generation ended with {answer.finish!r}; see the server log")
        return answer

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        from ai_how.serving.engine.protocol import SamplingParams

        if isinstance(payload, InferRequest):
            if not payload.inputs:
                raise InvalidInput("V2 request has no inputs")
            prompts = [p.decode() if isinstance(p, bytes) else str(p) for p in payload.inputs[0].data]
            params = SamplingParams(max_tokens=32)
        else:
            if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
                raise InvalidInput('V1 request must be {"instances": ["prompt", ...]}')
            prompts = [str(p) for p in payload["instances"]]
            extra = payload.get("parameters") or {}
            max_new = extra.get("max_new_tokens", extra.get("max_tokens", 32))
            if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new < 1:
                raise InvalidInput("parameters.max_tokens must be a positive integer")
            params = SamplingParams(max_tokens=max_new)
        if not prompts:
            raise InvalidInput("the request has no prompts")
        answers = await asyncio.gather(*(self.complete(self.encode(p), params) for p in prompts))
        texts = [a.text for a in answers]
        if isinstance(payload, InferRequest):
            out = InferOutput(name="text_output", shape=[len(texts)], datatype="BYTES", data=texts)
            return InferResponse(
                model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4())
            )
        return {"predictions": texts}


# The serving runtime for each kind of model ai-how trains.
def _classifier(name: str, model_dir: Path, options: ServeOptions) -> Model:
    from ai_how.serving.classifier import ClassifierModel

    return ClassifierModel(name, model_dir, device=options.device)


RUNTIMES: dict[str, Callable[[str, Path, ServeOptions], Model]] = {"classifier": _classifier, "llm": LLMModel}


def build_model(name: str, model_dir: Path, options: ServeOptions | None = None) -> Model:
    model = RUNTIMES[model_kind(model_dir)](name, model_dir, options or ServeOptions())
    model.load()
    return model
