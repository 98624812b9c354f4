"""The digits CNN behind KServe's V1/V2 protocol: each request is checked alone, concurrent ones run as one batch.

``predict`` is ``async``: KServe's dataplane awaits it, so while one batch runs on the GPU (or the CPU)
in the batcher's worker thread, the event loop keeps taking requests, and they go together as the next
batch (``batcher.MicroBatcher``). A malformed request fails with ``InvalidInput`` before it joins a
batch, so it never fails anyone else's.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput

from ai_how.serving.batcher import MicroBatcher
from ai_how.serving.devices import check_device, resolve_device


class ClassifierModel(Model):
    """The digits CNN: instances are images (8×8 or flat 64 values, raw pixel scale)."""

    def __init__(
        self,
        name: str,
        model_dir: Path,
        device: str = "auto",
        max_batch: int = 64,
        max_wait_s: float = 0.0,
    ) -> None:
        super().__init__(name)
        check_device(device)
        self.model_dir = model_dir
        self.requested_device = device
        self.device = ""  # the resolved one, once loaded
        self.net: Any = None
        self.config: dict[str, Any] = {}
        self.batcher: MicroBatcher[tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._infer, max_batch=max_batch, max_wait_s=max_wait_s, model=name
        )

    def load(self) -> bool:
        from ai_how.workloads import cnn

        self.device = resolve_device(self.requested_device)
        self.net, self.config = cnn.load(self.model_dir, self.device)
        self.ready = True
        return True

    def stop(self) -> None:
        self.batcher.close()
        super().stop()

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

    def _infer(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One batch (the batcher's worker thread): labels and probabilities, computed on ``self.device``."""
        from ai_how.workloads import cnn

        return cnn.infer(self.net, self.config, rows)

    async def _classify(self, instances: Any) -> tuple[np.ndarray, np.ndarray]:
        from ai_how.workloads import cnn

        if self.net is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        try:
            rows = cnn.prepare(self.config, instances)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return await self.batcher.submit(rows)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            if not payload.inputs:
                raise InvalidInput("V2 request has no inputs")
            first = payload.inputs[0]
            try:
                instances = first.as_numpy()
            except ValueError:
                raise InvalidInput(
                    f"V2 input {first.name!r}: its data does not fill its shape {first.shape}"
                ) from None
            labels, probs = await self._classify(instances)
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
        labels, _ = await self._classify(payload["instances"])
        return {"predictions": labels.tolist()}
