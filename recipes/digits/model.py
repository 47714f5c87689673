"""Digits example model: a small ResNet for scikit-learn's 8x8 handwritten digits, upsampled to 16x16.

Input  ``image``:  float32 [batch, 1, 16, 16] -- one digit, pixel values 0..1.
Output ``logits``: float32 [batch, 10]        -- scores of the digits 0-9.

ResNet-style on purpose: three stages of two basic blocks (3x3 conv + BN + ReLU, twice, plus the
shortcut), 48 -> 96 -> 192 channels at 16x16 -> 8x8 -> 4x4, so pruning must keep every residual add
consistent (Torch-Pruning's DepGraph removes the same channels on both sides of each add). About 60 M
multiply-adds: 2-4 ms at one thread on this project's 2-core x86 machine, large enough that removing
channels shows up in the latency. Weights: ``weights.pt``, written by ``train.py``.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (through a strided 1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class DigitsResNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (48, 96, 192), classes: int = 10) -> None:
        super().__init__()
        a, b, c = widths
        self.stem = nn.Sequential(nn.Conv2d(1, a, 3, padding=1, bias=False), nn.BatchNorm2d(a), nn.ReLU())
        self.stage1 = nn.Sequential(Block(a, a), Block(a, a))
        self.stage2 = nn.Sequential(Block(a, b, 2), Block(b, b))
        self.stage3 = nn.Sequential(Block(b, c, 2), Block(c, c))
        self.fc = nn.Linear(c, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(image))))
        return self.fc(x.mean(dim=(2, 3)))


def build() -> nn.Module:
    """A fresh, untrained DigitsResNet in eval mode (load ``weights.pt`` into it)."""
    return DigitsResNet().eval()
