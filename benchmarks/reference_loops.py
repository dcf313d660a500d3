"""The two baselines `bench_score.py` times against `reasonseg score`, each run as its own process.

  torch: the reference's way: decode the image and every mask, build the ground truth on a full canvas, and
         count intersection and union per query with torch.histc over {0, 1} after setting ignore pixels to 255.
  numpy: a plain loop: image size from the header, full-canvas ground truth, pycocotools decode, boolean ops.

Both print {"giou", "ciou", "n"} as JSON. Usage: python reference_loops.py torch|numpy DATA SPLIT PREDICTIONS
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np


def load_annotation(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return json.loads(raw.decode("cp1252"))


def full_canvas_mask(shapes: list[dict], height: int, width: int) -> np.ndarray:
    # Each shape drawn as LISA's OpenCV 4.8 draws it (polylines + fillPoly): by reasonseg's restatement, since the
    # installed OpenCV may draw otherwise (docs/protocol.md §2). Full canvases, as the reference does.
    from reasonseg.polygon_fill import draw_polygon

    kept = [s for s in shapes if s["label"].lower() != "flag"]
    areas = []
    for s in kept:
        canvas = np.zeros((height, width), np.uint8)
        draw_polygon(canvas, np.array(s["points"], dtype=np.int32), 1, height, width)
        areas.append(canvas.sum())
    mask = np.zeros((height, width), np.uint8)
    for i in np.argsort(areas)[::-1]:
        value = 255 if "ignore" in kept[i]["label"].lower() else 1
        draw_polygon(mask, np.array(kept[i]["points"], dtype=np.int32), value, height, width)
    return mask


def read_prediction_masks(path: Path):
    """Yield (id, mask) from a predictions JSON (pycocotools decode) or a folder of PNGs."""
    from pycocotools import mask as cocomask

    if path.is_dir():
        for png in sorted(path.glob("*.png")):
            yield png.stem, cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        return
    for entry in json.loads(path.read_text())["predictions"]:
        rle = {"size": entry["mask"]["size"], "counts": entry["mask"]["counts"].encode()}
        yield entry["id"], cocomask.decode(rle)


def iu_torch(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    import torch

    output = torch.from_numpy((pred > 0).astype(np.int64)).reshape(-1)
    target = torch.from_numpy(gt.astype(np.int64)).reshape(-1)
    output[target == 255] = 255
    matched = output[output == target]
    area_i = torch.histc(matched.float(), bins=2, min=0, max=1)
    area_o = torch.histc(output.float(), bins=2, min=0, max=1)
    area_t = torch.histc(target.float(), bins=2, min=0, max=1)
    area_u = area_o + area_t - area_i
    return float(area_i[1]), float(area_u[1])


def iu_numpy(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    p = (pred != 0) & (gt != 255)
    t = gt == 1
    return float(np.count_nonzero(p & t)), float(np.count_nonzero(p | t))


def main(way: str, data: Path, split: str, predictions: Path) -> None:
    from PIL import Image

    preds = dict(read_prediction_masks(predictions))
    ious, inter_sum, union_sum = [], 0.0, 0.0
    for image_path in sorted((data / split).glob("*.jpg")):
        ann = load_annotation(image_path.with_suffix(".json"))
        if way == "torch":
            height, width = cv2.imread(str(image_path)).shape[:2]
        else:
            with Image.open(image_path) as img:
                width, height = img.size
        gt = full_canvas_mask(ann.get("shapes", []), height, width)
        i, u = (iu_torch if way == "torch" else iu_numpy)(gt, preds[image_path.stem])
        iou = i / (u + 1e-5) + (1.0 if u == 0 else 0.0)
        ious.append(iou)
        inter_sum += i
        union_sum += u
    print(json.dumps({"giou": sum(ious) / (len(ious) + 1e-5), "ciou": inter_sum / (union_sum + 1e-10),
                      "n": len(ious)}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
