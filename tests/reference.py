"""An independent restatement of the reference semantics (docs/protocol.md §2–3), used only by the tests.

Full-size canvases, plain numpy, no shortcuts: the library is compared against this on random inputs.
"""
from __future__ import annotations

import cv2
import numpy as np


def reference_mask(shapes: list[tuple[str, list[list[float]]]], height: int, width: int) -> np.ndarray:
    kept = [(label, pts) for label, pts in shapes if label.lower() != "flag"]
    areas = []
    for _, pts in kept:
        canvas = np.zeros((height, width), np.uint8)
        poly = np.array(pts, dtype=np.int32)
        cv2.polylines(canvas, [poly], True, 1, 1)
        cv2.fillPoly(canvas, [poly], 1)
        areas.append(canvas.sum())
    mask = np.zeros((height, width), np.uint8)
    for i in np.argsort(areas)[::-1]:
        label, pts = kept[i]
        value = 255 if "ignore" in label.lower() else 1
        poly = np.array(pts, dtype=np.int32)
        cv2.polylines(mask, [poly], True, value, 1)
        cv2.fillPoly(mask, [poly], value)
    return mask


def reference_iu(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    valid = gt != 255
    p = (pred != 0) & valid
    t = gt == 1
    return int((p & t).sum()), int((p | t).sum())


def reference_aggregates(pairs: list[tuple[int, int]]) -> tuple[float, float]:
    ious = []
    for i, u in pairs:
        iou = i / (u + 1e-5)
        if u == 0:
            iou += 1.0
        ious.append(iou)
    giou = sum(ious) / (len(ious) + 1e-5)
    ciou = sum(i for i, _ in pairs) / (sum(u for _, u in pairs) + 1e-10)
    return giou, ciou
