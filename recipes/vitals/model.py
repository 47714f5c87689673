"""Vitals example model: a compact 1D CNN that flags anomalous ECG windows.

Input  ``ecg``:    float32 [batch, 1, 256] -- 2 s of single-lead ECG at 128 Hz (millivolt-ish scale).
Output ``logits``: float32 [batch, 2]      -- class 0 normal rhythm, class 1 anomaly.

The layers are plain Conv1d / BatchNorm1d / ReLU / MaxPool1d / Linear plus a mean over the
time axis, all of which export to ONNX with a dynamic batch dimension (BatchNorm folds into the
preceding convolution once the model is in eval mode). The two max-pools use a window of 4 and
the last convolution is dilated, so each of its outputs sees about 100 samples (0.8 s) of
signal: enough to span a P wave and the QRS that should follow it, a premature beat and its
neighbours, or several beats of a tachycardia burst.

Weights: ``weights.pt`` next to this file, written by ``train.py``.
"""

from __future__ import annotations

import torch
from torch import nn

WINDOW = 256          # samples per window
SAMPLE_RATE = 128     # Hz


class VitalsNet(nn.Module):
    """Conv(1->16,k7)+BN+ReLU+Pool4 -> Conv(16->32,k5)+BN+ReLU+Pool4 -> Conv(32->64,k3,dilation 2)+ReLU
    -> mean over time -> Linear(64,32) -> ReLU -> Linear(32,2)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, kernel_size=7, padding=3, bias=False),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.MaxPool1d(4),                                   # 256 -> 64
            nn.Conv1d(16, 32, kernel_size=5, padding=2, bias=False),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.MaxPool1d(4),                                   # 64 -> 16
            nn.Conv1d(32, 64, kernel_size=3, padding=2, dilation=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, 2),
        )

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        x = self.features(ecg)          # [batch, 64, 16]
        x = x.mean(dim=2)               # global average pool over time -> [batch, 64]
        return self.head(x)             # [batch, 2]


def build() -> torch.nn.Module:
    """A fresh, untrained VitalsNet in eval mode (load ``weights.pt`` into it)."""
    return VitalsNet().eval()
