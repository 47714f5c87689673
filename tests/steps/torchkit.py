"""Tiny real PyTorch models and labelled datasets for the prune and distill tests, written into a folder
that plays the recipe's: a residual CNN (so pruning must keep an add consistent), a student, and a net
whose forward hard-codes a channel count (which pruning breaks)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

MODELS = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Net(nn.Module):
    """stem 16 -> residual block 16 -> conv 32 (stride 2) -> mean -> fc 4"""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.block = Block(16)
        self.head = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        x = self.head(self.block(torch.relu(self.stem(x))))
        return self.fc(torch.relu(x).mean(dim=(2, 3)))


class Small(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class HardCoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3)
        self.fc = nn.Linear(16 * 6 * 6, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(y.shape[0], 16 * 6 * 6))


def build():
    return Net()


def student():
    return Small()


def three_classes():
    return Small(classes=3)


def hard_coded():
    return HardCoded()
'''

INPUTS = {"x": {"shape": ["batch", 1, 8, 8], "dtype": "float32"}}


def recipe_dir(root: Path, weights: bool = True) -> Path:
    """A folder with models.py, trained-ish weights for Net, and labelled train/eval sets (4 classes: which
    quadrant of the 8x8 image is brightest) plus an unlabelled copy of the train set."""
    import torch

    root.mkdir(parents=True, exist_ok=True)
    (root / "models.py").write_text(textwrap.dedent(MODELS))
    for name, seed, n in (("train", 0, 96), ("eval", 1, 48)):
        x, y = _quadrants(seed, n)
        np.savez(root / f"{name}.npz", x=x, labels=y)
        if name == "train":
            np.savez(root / "unlabelled.npz", x=x)
            np.savez(root / "wrong-input.npz", image=x, labels=y)
    if weights:
        ns: dict[str, Any] = {}
        exec(compile(textwrap.dedent(MODELS), str(root / "models.py"), "exec"), ns)
        torch.manual_seed(3)
        net = ns["Net"]()
        torch.save(net.state_dict(), root / "weights.pt")
    return root


def _quadrants(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32) * 0.5
    y = rng.integers(0, 4, n)
    for i, q in enumerate(y):
        r, c = divmod(int(q), 2)
        x[i, 0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 1.5
    return x, y.astype(np.int64)


def source(root: Path, factory: str = "models.py:build") -> dict[str, Any]:
    w = root / "weights.pt"
    return {"pytorch": {"factory": factory, "weights": str(w) if w.is_file() and factory.endswith(":build") else None}}


def data(root: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(root.glob("*.npz"))}


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a step's output folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
