"""The seed's SimpleCNN (MLOPS-1.1), sized from the input image: shared by training and serving.

``load`` and ``classify`` are the one way a saved model directory (model.pt + model_config.json)
is loaded and applied to raw pixels: the model server and the MLflow pyfunc both use them.
``classify`` is ``prepare`` (validate one request) then ``infer`` (run a batch on the net's device), so a
server can validate each request alone and run many together.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class SimpleCNN(nn.Module):
    """Conv(1→32, 3×3) → Conv(32→64, 3×3) → max-pool → FC → 128 → classes."""

    def __init__(self, height: int, width: int, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25)
        )
        flat = 64 * ((height - 4) // 2) * ((width - 4) // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


def build(config: dict[str, Any]) -> SimpleCNN:
    _, height, width = config["input_shape"]
    return SimpleCNN(height, width, config["num_classes"])


def load(model_dir: Path, device: str = "cpu") -> tuple[SimpleCNN, dict[str, Any]]:
    """The trained network (eval mode, on ``device``) and its config from a model directory."""
    config: dict[str, Any] = json.loads((model_dir / "model_config.json").read_text())
    net = build(config)
    net.load_state_dict(torch.load(model_dir / "model.pt", map_location=device, weights_only=True))
    net.to(device)
    net.eval()
    return net, config


def prepare(config: dict[str, Any], batch: Any) -> np.ndarray:
    """Raw-pixel images (flat or image-shaped) as a float32 array of shape (N, *input_shape), N >= 1;
    ValueError naming the expected shape otherwise."""
    shape = tuple(config["input_shape"])
    size = math.prod(shape)
    expected = f"each instance must have {size} values (shape {list(shape)})"
    try:
        x = np.asarray(batch, dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError(f"instances must be numbers: {expected}") from None
    try:
        x = x.reshape(-1, *shape)
    except ValueError:
        raise ValueError(expected) from None
    if x.shape[0] == 0:
        raise ValueError("no instances")
    return x


def infer(net: nn.Module, config: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and class probabilities for a prepared batch (see ``prepare``), computed where ``net`` lives."""
    device = next(net.parameters()).device
    with torch.inference_mode():
        tensor = torch.from_numpy(x).to(device)
        tensor = (tensor / config["scale"] - config["mean"]) / config["std"]
        probs = torch.softmax(net(tensor), dim=1).cpu().numpy()
    return probs.argmax(1).astype(np.int64), probs.astype(np.float32)


def classify(net: nn.Module, config: dict[str, Any], batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and class probabilities for raw-pixel images (flat or image-shaped); ValueError on a bad shape."""
    return infer(net, config, prepare(config, batch))
