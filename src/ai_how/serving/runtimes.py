"""KServe models for what ai-how trains: one ``predict`` per model answering V1 (dict) and V2 (InferRequest).

The same classes run in the local server and in a KServe pod (a custom predictor
container runs ``python -m ai_how.serving.server``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput


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


class ClassifierModel(Model):
    """The digits CNN: instances are images (8×8 or flat 64 values, raw pixel scale)."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.net: Any = None
        self.config: dict[str, Any] = {}

    def load(self) -> bool:
        from ai_how.workloads import cnn

        self.net, self.config = cnn.load(self.model_dir)
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "input-0", "datatype": "FP32", "shape": [-1, *self.config.get("input_shape", [1, 8, 8])]}
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        classes = self.config.get("num_classes", 10)
        return [
            {"name": "predictions", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        ]

    def _classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ai_how.workloads import cnn

        try:
            return cnn.classify(self.net, self.config, batch)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            if not payload.inputs:
                raise InvalidInput("V2 request has no inputs")
            labels, probs = self._classify(payload.inputs[0].as_numpy())
            out_labels = InferOutput(name="predictions", shape=list(labels.shape), datatype="INT64")
            out_labels.set_data_from_numpy(labels, binary_data=False)
            out_probs = InferOutput(name="probabilities", shape=list(probs.shape), datatype="FP32")
            out_probs.set_data_from_numpy(probs, binary_data=False)
            return InferResponse(
                model_name=self.name,
                infer_outputs=[out_labels, out_probs],
                response_id=payload.id or str(uuid.uuid4()),
            )
        if not isinstance(payload, dict) or "instances" not in payload:
            raise InvalidInput('V1 request must be {"instances": [...]}')
        labels, _ = self._classify(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": labels.tolist()}


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


class LLMModel(Model):
    """A causal LM (HF directory saved by Oumi). V1/V2 take prompts; OpenAI routes are in openai_routes."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.lm: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()  # one generate at a time on the CPU

    def load(self) -> bool:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.lm = AutoModelForCausalLM.from_pretrained(self.model_dir)
        self.lm.eval()
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        if not isinstance(messages, list) or not messages:
            raise InvalidInput("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
                raise InvalidInput("each message needs 'role' and a string 'content'")
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
    ) -> Generation:
        import torch

        if not isinstance(prompt, str):
            raise InvalidInput("prompt must be a string")
        if not 1 <= max_new_tokens <= 4096:
            raise InvalidInput("max tokens must be between 1 and 4096")
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        limit = getattr(self.lm.config, "max_position_embeddings", 2048)
        if encoded["input_ids"].shape[1] + max_new_tokens > limit:
            raise InvalidInput(f"prompt + max tokens exceed the model's context of {limit} tokens")
        sampling = temperature > 0
        with self._lock, torch.no_grad():
            output = self.lm.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        new = output[0, encoded["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "stop" if len(new) < max_new_tokens else "length"
        for marker in stop or []:
            if marker and marker in text:
                text, finish = text[: text.index(marker)], "stop"
        return Generation(text, int(encoded["input_ids"].shape[1]), len(new), finish)

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            if not payload.inputs:
                raise InvalidInput("V2 request has no inputs")
            prompts = [p.decode() if isinstance(p, bytes) else str(p) for p in payload.inputs[0].data]
            texts = [self.generate(p).text for p in prompts]
            out = InferOutput(name="text_output", shape=[len(texts)], datatype="BYTES", data=texts)
            return InferResponse(
                model_name=self.name, infer_outputs=[out], response_id=payload.id or str(uuid.uuid4())
            )
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise InvalidInput('V1 request must be {"instances": ["prompt", ...]}')
        params = payload.get("parameters") or {}
        max_new = int(params.get("max_new_tokens", params.get("max_tokens", 32)))
        return {"predictions": [self.generate(str(p), max_new).text for p in payload["instances"]]}


# The serving runtime for each kind of model ai-how trains.
RUNTIMES: dict[str, Callable[[str, Path], Model]] = {"classifier": ClassifierModel, "llm": LLMModel}


def build_model(name: str, model_dir: Path) -> Model:
    model = RUNTIMES[model_kind(model_dir)](name, model_dir)
    model.load()
    return model
