"""The seed's SimpleCNN (MLOPS-1.1), sized from the input image: shared by training and serving."""

from __future__ import annotations

from typing import Any

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
