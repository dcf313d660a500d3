"""An independent restatement of the reference semantics (docs/protocol.md §2–3), used only by the tests.

Full-size canvases, plain numpy, no shortcuts: the library is compared against this on random inputs.
Each shape is drawn as LISA's environment draws it, by OpenCV 4.8 (`lisa_polygon`).
"""
from __future__ import annotations

import atexit

import numpy as np
from opencv48 import OpenCV48, scratch_python

_WORKER: list[OpenCV48 | None] = []


def lisa_polygon(canvas: np.ndarray, poly: np.ndarray, value: int) -> None:
    """cv2.polylines(closed, 1 px) + cv2.fillPoly with OpenCV 4.8: run in the OpenCV 4.8 scratch environment when
    there is one (`make test` builds it), else reasonseg's restatement of it, which tests/test_polygon_fill.py pins
    to OpenCV 4.8 (the installed OpenCV may draw otherwise: 4.11 changed fillPoly)."""
    if not _WORKER:
        python = scratch_python()
        _WORKER.append(OpenCV48(python) if python else None)
        if _WORKER[0] is not None:
            atexit.register(_WORKER[0].close)
    height, width = canvas.shape
    if _WORKER[0] is None:
        from reasonseg.polygon_fill import draw_polygon

        draw_polygon(canvas, poly, value, height, width)
    else:
        canvas[_WORKER[0].draw(height, width, poly) == 1] = value


def reference_mask(shapes: list[tuple[str, list[list[float]]]], height: int, width: int) -> np.ndarray:
    kept = [(label, pts) for label, pts in shapes if label.lower() != "flag"]
    areas = []
    for _, pts in kept:
        canvas = np.zeros((height, width), np.uint8)
        lisa_polygon(canvas, np.array(pts, dtype=np.int32), 1)
        areas.append(canvas.sum())
    mask = np.zeros((height, width), np.uint8)
    for i in np.argsort(areas)[::-1]:
        label, pts = kept[i]
        value = 255 if "ignore" in label.lower() else 1
        lisa_polygon(mask, np.array(pts, dtype=np.int32), value)
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
