"""Factories for the failing-recipe tests: a tiny net, and factories that go wrong on purpose.

Input ``x``: float32 [batch, 4]; output: float32 [batch, 2]. ``weights.pt`` (written by
../_make_fixtures.py) fits ``build()``; ``weights-wrong.pt`` does not.
"""

from __future__ import annotations

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def build() -> nn.Module:
    return Tiny().eval()


def explode() -> nn.Module:
    raise RuntimeError("out of coffee")


def not_a_module() -> dict:
    return {"fc": nn.Linear(4, 2)}
