"""Train the vitals example model on synthetic ECG and write its weights and datasets.

    python recipes/vitals/train.py

writes, next to this file:

    weights.pt  the trained state_dict of model.build()       (torch.save)
    calib.npz   ecg    float32 [200, 1, 256]   calibration windows, unlabelled
    eval.npz    ecg    float32 [500, 1, 256]   held-out windows
                labels int64   [500]           0 normal, 1 anomaly

Everything is deterministic: the signals come from seeded numpy generators (a different
seed for train, calib and eval), training runs single-threaded with
torch.use_deterministic_algorithms(True), and the .npz files are written uncompressed,
so a rerun gives byte-identical files.

Signal model (128 Hz, 256-sample windows = 2 s):
  normal   sinus rhythm, 55-100 bpm with a little beat-to-beat jitter; each beat is a sum of
           Gaussians (P, Q, R, S, T) with jittered amplitudes and widths; overall gain,
           baseline wander (a slow sine) and Gaussian noise on top.
  anomaly  (about 35 % of windows) one of
           - PVC: a premature, wide, tall QRS with no P wave and an inverted T wave,
             followed by a compensatory pause;
           - dropped beat (Mobitz II-like): a P wave that is not followed by a QRS/T;
           - tachycardia burst: a run of 3-6 fast beats (150-215 bpm) with no P waves;
           - ST elevation: every beat's ST segment is raised by 0.15-0.4 mV.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import SAMPLE_RATE, WINDOW, build  # noqa: E402

FS = float(SAMPLE_RATE)
N = WINDOW
T = np.arange(N, dtype=np.float64) / FS        # sample times in seconds, 0 .. 2 s

SEED_TRAIN, SEED_CALIB, SEED_EVAL, SEED_TORCH = 1001, 2002, 3003, 0
N_TRAIN, N_CALIB, N_EVAL = 4000, 200, 500
P_ANOMALY = 0.35
EPOCHS, BATCH, LR = 20, 64, 3e-3

NORMAL, PVC, DROPPED, TACHY, ST = "normal", "pvc", "dropped", "tachy", "st"
ANOMALIES = (PVC, DROPPED, TACHY, ST)


def _g(t: np.ndarray, center: float, sigma: float, amp: float) -> np.ndarray:
    return amp * np.exp(-0.5 * ((t - center) / sigma) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Morphology:
    """Per-window beat shape: the patient's 'normal' beat, jittered once per window."""

    def __init__(self, rng: np.random.Generator):
        self.p = (rng.uniform(-0.18, -0.14), rng.uniform(0.018, 0.028), rng.uniform(0.1, 0.25))
        self.q = (rng.uniform(-0.035, -0.025), rng.uniform(0.008, 0.012), -rng.uniform(0.05, 0.15))
        self.r = (0.0, rng.uniform(0.009, 0.014), rng.uniform(0.8, 1.3))
        self.s = (rng.uniform(0.025, 0.035), rng.uniform(0.009, 0.014), -rng.uniform(0.1, 0.3))
        self.t = (rng.uniform(0.22, 0.3), rng.uniform(0.04, 0.06), rng.uniform(0.15, 0.35))


def _render_beat(t: np.ndarray, tr: float, m: Morphology, rng: np.random.Generator, *,
                 p_wave: bool = True, qrs_t: bool = True, st: float = 0.0) -> np.ndarray:
    """One sinus beat with its R peak at time tr (amplitudes jittered beat to beat)."""
    jit = lambda: rng.uniform(0.9, 1.1)  # noqa: E731
    out = np.zeros_like(t)
    if p_wave:
        c, s, a = m.p
        out += _g(t, tr + c, s, a * jit())
    if qrs_t:
        for c, s, a in (m.q, m.r, m.s, m.t):
            out += _g(t, tr + c, s, a * jit())
        if st:
            # a plateau from the J point to the T wave
            out += st * _sigmoid((t - tr - 0.045) / 0.008) * _sigmoid((tr + m.t[0] - t) / 0.03)
    return out


def _render_pvc(t: np.ndarray, tr: float, rng: np.random.Generator) -> np.ndarray:
    """A premature ventricular beat: no P wave, wide tall QRS, discordant (inverted) T wave."""
    sign = 1.0 if rng.random() < 0.75 else -1.0
    width = rng.uniform(0.03, 0.045)
    out = _g(t, tr, width, sign * rng.uniform(1.3, 2.0))
    out += _g(t, tr + rng.uniform(0.05, 0.07), width, -sign * rng.uniform(0.2, 0.5))
    out += _g(t, tr + rng.uniform(0.3, 0.36), rng.uniform(0.06, 0.08), -sign * rng.uniform(0.3, 0.5))
    return out


def synth_window(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One 256-sample ECG window of the given kind (float64, unnormalised, ~mV)."""
    m = Morphology(rng)
    rr = 60.0 / rng.uniform(55.0, 100.0)
    # a sinus beat train covering the window with margin; the first R peak's phase is random
    beat_times: list[float] = []
    tr = -rng.uniform(0.0, rr) - rr
    while tr < 2.0 + rr:
        beat_times.append(tr)
        tr += rr * rng.uniform(0.96, 1.04)
    beats = np.asarray(beat_times)

    sig = np.zeros(N)
    st = rng.uniform(0.15, 0.4) if kind == ST else 0.0

    if kind in (NORMAL, ST):
        for b in beats:
            sig += _render_beat(T, b, m, rng, st=st)
    elif kind == DROPPED:
        inside = np.flatnonzero((beats > 0.35) & (beats < 1.75))
        # one sinus beat in the middle of the window conducts no QRS: its P wave stands alone
        # (RR <= 1.09 s, so a 1.4 s span always holds a beat)
        drop = rng.choice(inside)
        for i, b in enumerate(beats):
            sig += _render_beat(T, b, m, rng, qrs_t=i != drop)
    elif kind == PVC:
        # a PVC comes early (55-75 % of the RR after a sinus beat) and lands inside the window;
        # the next sinus beat is then blocked, giving the compensatory pause
        coupling = rr * rng.uniform(0.55, 0.75)
        ok = np.flatnonzero((beats + coupling > 0.25) & (beats + coupling < 1.8))
        prev = beats[rng.choice(ok)]
        pvc_t = prev + coupling
        for b in beats:
            if b <= prev or b > pvc_t + 0.5 * rr:
                sig += _render_beat(T, b, m, rng)
        sig += _render_pvc(T, pvc_t, rng)
    elif kind == TACHY:
        fast = 60.0 / rng.uniform(150.0, 215.0)
        run = int(rng.integers(3, 7))
        start = rng.uniform(0.2, 1.2)
        # sinus beats before the run, then the run, then sinus again after a pause
        t_end = start + (run - 1) * fast
        for b in beats:
            if b < start - 0.6 * rr or b > t_end + rr:
                sig += _render_beat(T, b, m, rng)
        for i in range(run):
            b = start + i * fast * rng.uniform(0.97, 1.03)
            sig += _render_beat(T, b, m, rng, p_wave=False)
    else:
        raise ValueError(kind)

    gain = rng.uniform(0.7, 1.3)
    wander = rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * T + rng.uniform(0, 2 * np.pi))
    noise = rng.normal(0.0, rng.uniform(0.01, 0.05), N)
    return gain * sig + wander + noise


def make_dataset(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n windows, float32 [n, 1, 256], with int64 labels [n] (1 = anomaly)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 1, N), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for i in range(n):
        anomalous = rng.random() < P_ANOMALY
        kind = ANOMALIES[int(rng.integers(len(ANOMALIES)))] if anomalous else NORMAL
        x[i, 0] = synth_window(rng, kind).astype(np.float32)
        y[i] = int(anomalous)
    return x, y


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def main() -> None:
    t0 = time.perf_counter()
    torch.manual_seed(SEED_TORCH)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    x_train, y_train = make_dataset(SEED_TRAIN, N_TRAIN)
    x_calib, _ = make_dataset(SEED_CALIB, N_CALIB)
    x_eval, y_eval = make_dataset(SEED_EVAL, N_EVAL)
    t_data = time.perf_counter() - t0

    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xe, ye = torch.from_numpy(x_eval), torch.from_numpy(y_eval)

    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    steps_per_epoch = (N_TRAIN + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, epochs=EPOCHS, steps_per_epoch=steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(SEED_TORCH)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(N_TRAIN, generator=shuffle)
        total = 0.0
        for i in range(0, N_TRAIN, BATCH):
            idx = order[i:i + BATCH]
            loss = loss_fn(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        print(f"epoch {epoch + 1:2d}/{EPOCHS}  loss {total / N_TRAIN:.4f}  eval acc {accuracy(model, xe, ye):.4f}")

    model.eval()
    train_acc, eval_acc = accuracy(model, xt, yt), accuracy(model, xe, ye)

    torch.save(model.state_dict(), HERE / "weights.pt")
    np.savez(HERE / "calib.npz", ecg=x_calib)
    np.savez(HERE / "eval.npz", ecg=x_eval, labels=y_eval)

    elapsed = time.perf_counter() - t0
    print(f"data synthesis {t_data:.1f} s, total {elapsed:.1f} s")
    print(f"anomaly fraction: train {y_train.mean():.3f}, eval {y_eval.mean():.3f}")
    print(f"train accuracy {train_acc:.4f}")
    print(f"eval accuracy  {eval_acc:.4f}")
    for name in ("weights.pt", "calib.npz", "eval.npz"):
        print(f"  {name:<10} {os.path.getsize(HERE / name):>8d} bytes")


if __name__ == "__main__":
    main()
