"""Task metrics for the detectors of the real-model corpus: edgebuild user metrics `score(reference, candidate, data)`.

Each decodes the raw outputs of both models the way the model's own package does (its score threshold,
box decoding and non-maximum suppression), then scores how well the candidate's detections agree with
the reference's (FP32) detections: a detection F1 over all samples,

    (reference boxes the candidate found + candidate boxes the reference has) / (all reference + candidate boxes)

where two boxes match when their IoU is at least 0.5 (and, for multi-class detectors, their classes agree),
one to one. Boxes whose score lies just under the package's threshold (within MARGIN) may be matched but are
not counted: a score moving from 0.26 to 0.24 flips a decision nobody can see as wrong, and counting it would
make the metric noisy. 1.0 when neither model finds anything. This file is self-contained (numpy only) so
edgebuild can load it next to a recipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MARGIN = 0.05
IOU = 0.5


# -- decoders (one sample each; rows: x0, y0, x1, y1, score, class) ---------------------------------------

def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        iou = _iou_one(boxes[i], boxes[rest])
        order = rest[iou <= thr]
    return keep


def _iou_one(b: np.ndarray, bs: np.ndarray) -> np.ndarray:
    x0 = np.maximum(b[0], bs[:, 0])
    y0 = np.maximum(b[1], bs[:, 1])
    x1 = np.minimum(b[2], bs[:, 2])
    y1 = np.minimum(b[3], bs[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda a: np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(b) + area(bs) - inter, 1e-9)


def boxes_yolov8(out: np.ndarray, thr: float = 0.25, nms: float = 0.45) -> np.ndarray:
    """nudenet _postprocess: out [4 + classes, anchors]; xywh centre boxes, the best class's score; boxes under
    0.2 dropped, then cv2.dnn.NMSBoxes(score 0.25, IoU 0.45) over all classes together."""
    rows = np.asarray(out, dtype=np.float64).T
    cls = rows[:, 4:]
    score = cls.max(1)
    keep = score >= thr
    rows, score, label = rows[keep], score[keep], cls[keep].argmax(1)
    xy = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                   rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2], 1)
    k = _nms(xy, score, nms)
    return np.concatenate([xy[k], score[k, None], label[k, None]], 1) if k else np.zeros((0, 6))


def boxes_yolox(out: np.ndarray, size: int = 416, thr: float = 0.1, nms: float = 0.45) -> np.ndarray:
    """ddddocr DetectionEngine.get_bbox: out [anchors, 5 + classes] over strides 8/16/32 at 416x416; centre + exp
    sizes on the grid, score = objectness x class, class-agnostic NMS at IoU 0.45, score threshold 0.1."""
    p = np.asarray(out, dtype=np.float64).copy()
    grids, strides = [], []
    for s in (8, 16, 32):
        n = size // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    p[:, :2] = (p[:, :2] + grid) * stride
    p[:, 2:4] = np.exp(np.clip(p[:, 2:4], -20, 20)) * stride
    scores = p[:, 4:5] * p[:, 5:]
    label = scores.argmax(1)
    score = scores[np.arange(len(label)), label]
    keep = score > thr
    b, score, label = p[keep, :4], score[keep], label[keep]
    xy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    k = _nms(xy, score, nms)
    return np.concatenate([xy[k], score[k, None], label[k, None]], 1) if k else np.zeros((0, 6))


def boxes_picodet(scores: list[np.ndarray], dists: list[np.ndarray], hw: tuple[int, int] = (800, 608),
                  thr: float = 0.5, nms: float = 0.5) -> np.ndarray:
    """rapid_layout PPPostProcess: per level (strides 8/16/32/64) scores [cells, classes] and distribution boxes
    [cells, 4 x (reg_max + 1)] decoded by softmax expectation around the cell centres; top 1000 per level; per class
    hard NMS (IoU 0.5) over the boxes above the confidence threshold (0.5)."""
    boxes, confs = [], []
    for stride, sc, dist in zip((8, 16, 32, 64), scores, dists):
        sc = np.asarray(sc, dtype=np.float64)
        dist = np.asarray(dist, dtype=np.float64)
        fh, fw = int(np.ceil(hw[0] / stride)), int(np.ceil(hw[1] / stride))
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        center = np.stack((cx, cy, cx, cy), 1)[: len(sc)]
        reg = dist.shape[-1] // 4
        d = dist.reshape(-1, reg)
        d = np.exp(d - d.max(1, keepdims=True))
        d = (d / d.sum(1, keepdims=True)) @ np.arange(reg)
        d = d.reshape(-1, 4) * stride
        top = np.argsort(-sc.max(1), kind="stable")[:1000]
        boxes.append(center[top] + np.array([-1, -1, 1, 1]) * d[top])
        confs.append(sc[top])
    b, c = np.concatenate(boxes), np.concatenate(confs)
    rows = []
    for k in range(c.shape[1]):
        m = c[:, k] > thr - MARGIN
        if not m.any():
            continue
        keep = _nms(b[m], c[m, k], nms)[:100]
        rows += [np.r_[b[m][i], c[m, k][i], k] for i in keep]
    return np.array(rows) if rows else np.zeros((0, 6))


# -- matching ---------------------------------------------------------------------------------------------

def _found(a: np.ndarray, b: np.ndarray, classes: bool) -> int:
    """How many boxes of `a` match a box of `b` one to one (IoU >= 0.5, same class), greedily by score."""
    if not len(a) or not len(b):
        return 0
    used = np.zeros(len(b), dtype=bool)
    n = 0
    for i in np.argsort(-a[:, 4], kind="stable"):
        iou = _iou_one(a[i], b)
        ok = (iou >= IOU) & ~used
        if classes:
            ok &= b[:, 5] == a[i, 5]
        if ok.any():
            used[int(np.argmax(np.where(ok, iou, -1)))] = True
            n += 1
    return n


def f1(ref: list[np.ndarray], cand: list[np.ndarray], thr: float, classes: bool = True) -> float:
    """Detection F1 of the candidate's boxes against the reference's over all samples (see the module docstring)."""
    hit = total = 0
    for r, c in zip(ref, cand):
        rs, cs = r[r[:, 4] >= thr], c[c[:, 4] >= thr]
        hit += _found(rs, c, classes) + _found(cs, r, classes)
        total += len(rs) + len(cs)
    return 1.0 if total == 0 else hit / total


# -- the metrics named in the recipes -------------------------------------------------------------------

def _first(outputs: dict[str, Any]) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())))


def score_yolov8(reference: dict[str, Any], candidate: dict[str, Any], data: dict[str, Any]) -> float:
    """nudenet: output0 [N, 22, anchors]."""
    r, c = _first(reference), _first(candidate)
    low = 0.25 - MARGIN
    return f1([boxes_yolov8(x, low) for x in r], [boxes_yolov8(x, low) for x in c], 0.25)


def score_yolox(reference: dict[str, Any], candidate: dict[str, Any], data: dict[str, Any]) -> float:
    """ddddocr common_det: output [N, 3549, 6] (one class: a character)."""
    r, c = _first(reference), _first(candidate)
    low = 0.1 - MARGIN
    return f1([boxes_yolox(x, thr=low) for x in r], [boxes_yolox(x, thr=low) for x in c], 0.1, classes=False)


def _picodet(outputs: dict[str, Any]) -> list[np.ndarray]:
    names = list(outputs)
    half = len(names) // 2
    # rapid_layout reads the first half of the outputs as scores (one per level), the second half as boxes
    sc = [np.asarray(outputs[n]) for n in names[:half]]
    ds = [np.asarray(outputs[n]) for n in names[half:]]
    if sc[0].shape[-1] > ds[0].shape[-1]:   # graph outputs listed the other way round
        sc, ds = ds, sc
    return [boxes_picodet([s[i] for s in sc], [d[i] for d in ds]) for i in range(len(sc[0]))]


def score_picodet(reference: dict[str, Any], candidate: dict[str, Any], data: dict[str, Any]) -> float:
    """rapid_layout layout_cdla: 4 score outputs [N, cells, 10] and 4 box outputs [N, cells, 32]."""
    return f1(_picodet(reference), _picodet(candidate), 0.5)
