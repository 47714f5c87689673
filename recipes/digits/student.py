"""The student `distill` trains for the digits example: a plain four-layer CNN, ~1/20 of the teacher's work.

Input and output as the teacher's (``model.py``): [batch, 1, 16, 16] -> [batch, 10].
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsStudent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv(1, 16), _conv(16, 32, 2), _conv(32, 32), _conv(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(image).mean(dim=(2, 3)))


def build() -> nn.Module:
    """A fresh, untrained student (distill trains it)."""
    return DigitsStudent()
