"""CLIPSeg prompted with the instruction; the probability threshold is chosen on val and stored.

The threshold maximises val gIoU (the `lisa` protocol) over a fixed grid. It is stored in the reasonseg cache keyed
by the weights and the val annotations, reused by later runs, and recorded in every predictions file's `meta`.
Predictions on val with a val-chosen threshold are optimistic; report test numbers.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..dataset import annotations_fingerprint, atomic_write_text, load_split
from ..errors import MethodError
from ..schema import Query, Sample
from .oracles import lisa_iou, target_and_ignore
from .predict import MaskInfo, option, read_rgb, weight_path
from .registry import MethodContext, register
from .weights import Slot, declare, quiet_transformers, resolve

CLIPSEG = Slot("clipseg", "CIDAS/clipseg-rd64-refined", "hub", "CLIPSeg")
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 … 0.95
CALIBRATION_VERSION = 1


class ClipSegModel:
    """CLIPSeg from a `save_pretrained` folder: per-pixel foreground probabilities at each image's size."""

    def __init__(self, path: Path, device: str = "cpu"):
        import torch
        from transformers import AutoProcessor, CLIPSegForImageSegmentation

        quiet_transformers()
        self.torch = torch
        self.device = device
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = CLIPSegForImageSegmentation.from_pretrained(path, local_files_only=True).to(device).eval()
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def probabilities(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> list[np.ndarray]:
        import cv2

        inputs = self.processor(text=list(texts), images=list(images), return_tensors="pt", padding=True,
                                truncation=True, max_length=self.max_length).to(self.device)
        with self.torch.inference_mode():
            logits = self.model(**inputs).logits
        if logits.ndim == 2:  # CLIPSeg drops the batch axis of a batch of one
            logits = logits[None]
        probs = self.torch.sigmoid(logits).float().cpu().numpy()
        return [cv2.resize(p, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
                for p, im in zip(probs, images, strict=True)]


def choose_threshold(probabilities: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                     ignores: Sequence[np.ndarray], grid: Sequence[float] = THRESHOLD_GRID) -> tuple[float, list]:
    """The grid threshold with the best gIoU (the lowest on ties), and the whole curve [(t, gIoU), …]."""
    if not probabilities:
        raise MethodError("no val queries to choose the CLIPSeg threshold on")
    curve = []
    for t in grid:
        ious = [lisa_iou(p >= t, tg, ig) for p, tg, ig in zip(probabilities, targets, ignores, strict=True)]
        curve.append((float(t), float(np.mean(ious))))
    best = max(curve, key=lambda c: (c[1], -c[0]))
    return best[0], curve


def calibration_path(weights: Path, val_fingerprint: str) -> Path:
    from ..cache import default_cache_dir

    config = weights / "config.json"
    weights_id = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else str(weights)
    key = hashlib.sha256(f"{weights.resolve()}|{weights_id}|{val_fingerprint}".encode()).hexdigest()[:24]
    return default_cache_dir() / "calibration" / f"clipseg-{key}.json"


def calibrate(model: ClipSegModel, val: Sequence[Sample], batch_size: int = 8) -> dict:
    probs, targets, ignores = [], [], []
    pairs = [(s, q) for s in val for q in s.queries("lisa")]
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        probs += model.probabilities([read_rgb(s) for s, _ in batch], [q.text for _, q in batch])
        for s, _ in batch:
            target, ignore = target_and_ignore(s)
            targets.append(target)
            ignores.append(ignore)
    threshold, curve = choose_threshold(probs, targets, ignores)
    return {"version": CALIBRATION_VERSION, "threshold": threshold, "val_giou": dict(curve)[threshold],
            "curve": curve, "val_queries": len(pairs), "protocol": "lisa"}


def stored_threshold(model: ClipSegModel, weights: Path, data_root: Path, recompute: bool = False
                     ) -> tuple[float, dict]:
    """The val-chosen threshold: from the cache when this weights/val pair was calibrated before."""
    val = load_split(data_root, "val")
    path = calibration_path(weights, annotations_fingerprint(val))
    if path.is_file() and not recompute:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("version") == CALIBRATION_VERSION:
                return float(record["threshold"]), {**record, "stored": str(path)}
        except (OSError, ValueError, KeyError):
            pass  # an unreadable record is recomputed
    record = calibrate(model, val)
    atomic_write_text(path, json.dumps(record, indent=1))
    return record["threshold"], {**record, "stored": str(path)}


class ClipSeg:
    def __init__(self, model: ClipSegModel, threshold: float, threshold_source: dict, weights: Path):
        self.model = model
        self.threshold = threshold
        self.threshold_source = threshold_source
        self.weights = weights

    def describe(self) -> dict:
        return {"weights": {"clipseg": str(self.weights)}, "threshold": self.threshold,
                "threshold_source": self.threshold_source}

    def predict_batch(self, pairs: Sequence[tuple[Sample, Query]]) -> list[MaskInfo]:
        probs = self.model.probabilities([read_rgb(s) for s, _ in pairs], [q.text for _, q in pairs])
        return [MaskInfo(p >= self.threshold, {}) for p in probs]

    def predict(self, sample: Sample, query: Query) -> MaskInfo:
        return self.predict_batch([(sample, query)])[0]


declare("clipseg", CLIPSEG)


@register("clipseg", "CLIPSeg prompted with the instruction; probability threshold chosen on val and stored",
          weights=CLIPSEG.model_id)
def build_clipseg(ctx: MethodContext) -> ClipSeg:
    path = resolve("clipseg", CLIPSEG, weight_path(ctx, "clipseg") or ctx.weights)
    fixed = option(ctx, "threshold", None, float)
    if fixed is None and not (Path(ctx.data_root) / "val").is_dir():
        raise MethodError("clipseg chooses its threshold on the val split, and DATA has no val/ folder",
                          path=str(ctx.data_root), hint="pass --set threshold=0.4 (or another value)")
    model = ClipSegModel(path, ctx.device)
    if fixed is not None:
        return ClipSeg(model, fixed, {"given": "--set threshold"}, path)
    threshold, record = stored_threshold(model, path, Path(ctx.data_root),
                                         recompute=option(ctx, "recalibrate", False, bool))
    source = {k: record[k] for k in ("val_giou", "val_queries", "protocol", "stored")}
    return ClipSeg(model, threshold, {"chosen_on": "val", **source}, path)
