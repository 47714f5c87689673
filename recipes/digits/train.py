"""Make the digits example's datasets from scikit-learn's bundled digits and train its model.

    python recipes/digits/train.py        # needs scikit-learn (the `bench` extra) and torch

writes, next to this file:

    train.npz  image float32 [1197, 1, 16, 16], labels int64 [1197]   what prune and distill train on
    eval.npz   image float32 [600, 1, 16, 16],  labels int64 [600]    held out: the accuracy check's data
    calib.npz  image float32 [200, 1, 16, 16]                         quantize-static's calibration (from train)
    weights.pt the trained state_dict of model.build()

The data is `sklearn.datasets.load_digits()` (1797 8x8 images of 16 grey levels, shipped inside
scikit-learn, no download), scaled to 0..1, upsampled to 16x16 by repeating each pixel 2x2, and split
by a seeded permutation. Training: Adam, 12 epochs, seeded batch order, deterministic algorithms, two
threads, so a rerun on the same kind of machine gives the same weights.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import build  # noqa: E402

SEED, N_EVAL, N_CALIB, EPOCHS, BATCH, LR = 14, 600, 200, 12, 32, 2e-3


def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 [N, 1, 16, 16] in 0..1, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((2, 2))).astype(np.float32)[:, None]
    return x, d.target.astype(np.int64)


def split() -> dict[str, dict[str, np.ndarray]]:
    x, y = digits()
    order = np.random.default_rng(SEED).permutation(len(x))
    ev, tr = order[:N_EVAL], order[N_EVAL:]
    return {"train": {"image": x[tr], "labels": y[tr]}, "eval": {"image": x[ev], "labels": y[ev]},
            "calib": {"image": x[tr[:N_CALIB]]}}


def train(data: dict[str, np.ndarray]) -> torch.nn.Module:
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    x, y = torch.from_numpy(data["image"]), torch.from_numpy(data["labels"])
    for epoch in range(EPOCHS):
        model.train()
        order = torch.from_numpy(np.random.default_rng([SEED, epoch]).permutation(len(x)))
        total = 0.0
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        sched.step()
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {total / len(x):.4f}", flush=True)
    return model.eval()


def accuracy(model: torch.nn.Module, data: dict[str, np.ndarray]) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(data["image"])).argmax(dim=1).numpy()
    return float(np.mean(pred == data["labels"]))


def main() -> None:
    sets = split()
    for name, arrays in sets.items():
        np.savez_compressed(HERE / f"{name}.npz", **arrays)
    t0 = time.perf_counter()
    model = train(sets["train"])
    torch.save(model.state_dict(), HERE / "weights.pt")
    print(f"trained in {time.perf_counter() - t0:.0f} s; eval accuracy {accuracy(model, sets['eval']):.4f}")


if __name__ == "__main__":
    main()
