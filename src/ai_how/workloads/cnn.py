"""The seed's SimpleCNN (MLOPS-1.1), sized from the input image: shared by training and serving.

``load`` and ``classify`` are the one way a saved model directory (model.pt + model_config.json)
is loaded and applied to raw pixels: the model server and the MLflow pyfunc both use them.
"""

from __future__ import annotations

import json
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


def load(model_dir: Path) -> tuple[SimpleCNN, dict[str, Any]]:
    """The trained network (eval mode) and its config from a model directory."""
    config: dict[str, Any] = json.loads((model_dir / "model_config.json").read_text())
    net = build(config)
    net.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    return net, config


def classify(net: nn.Module, config: dict[str, Any], batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and class probabilities for raw-pixel images (flat or image-shaped); ValueError on a bad shape."""
    shape = tuple(config["input_shape"])
    size = int(np.prod(shape))
    try:
        x = np.asarray(batch, dtype=np.float32).reshape(-1, *shape)
    except ValueError:
        raise ValueError(f"each instance must have {size} values (shape {list(shape)})") from None
    if x.shape[0] == 0:
        raise ValueError("no instances")
    tensor = (torch.from_numpy(x) / config["scale"] - config["mean"]) / config["std"]
    with torch.no_grad():
        probs = torch.softmax(net(tensor), dim=1).numpy()
    return probs.argmax(1).astype(np.int64), probs.astype(np.float32)
