"""Oracles: methods that read the ground truth, to measure the ceiling of a mask decoder (never real methods).

- `oracle-box-sam`: SAM prompted with the ground-truth bounding box — what box-prompted SAM can reach with a
  perfect detector. The box encloses all target polygons of the query (SAM takes one box).
- `oracle-sam-best`: SAM's automatic masks, the one with the best IoU against the ground truth — what a perfect
  selector over SAM's proposals can reach.

Both score the LISA way (ignore pixels excluded); an empty target is answered with an empty mask, which the `lisa`
protocol scores 1.0, so the ceiling is a ceiling.
"""
from __future__ import annotations

import numpy as np

from ..masks import rasterize_shapes
from ..schema import IGNORE, TARGET, Query, Sample
from .grounded_sam import SAM, SamSegmenter, build_segmenter
from .predict import MaskInfo, option, read_rgb
from .registry import MethodContext, register
from .weights import declare

# segment-anything's SamAutomaticMaskGenerator defaults, overridable with --set KEY=VALUE.
AUTOMATIC_DEFAULTS = {"points_per_side": 32, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
                      "box_nms_thresh": 0.7, "min_mask_region_area": 0}


def target_and_ignore(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    gt = rasterize_shapes(sample.shapes, sample.height, sample.width)
    return gt == TARGET, gt == IGNORE


def lisa_iou(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray) -> float:
    """The `lisa` protocol's per-query IoU (ignore pixels excluded, empty union scores 1)."""
    pred = pred.astype(bool) & ~ignore
    inter = int(np.count_nonzero(pred & target))
    union = int(np.count_nonzero(pred | target))
    return inter / (union + 1e-5) + (1.0 if union == 0 else 0.0)


def target_box(target: np.ndarray) -> list[float] | None:
    """XYXY box over pixel extents: column x covers [x, x + 1)."""
    ys, xs = np.nonzero(target)
    if xs.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


class OracleBoxSam:
    def __init__(self, segmenter: SamSegmenter, weights: str, multimask: bool = False):
        self.segmenter = segmenter
        self.weights = weights
        self.multimask = multimask

    def describe(self) -> dict:
        return {"weights": {"sam": self.weights}, "oracle": True,
                "reads": "ground-truth bounding box" + (", best of SAM's 4 outputs" if self.multimask else "")}

    def predict(self, sample: Sample, query: Query) -> MaskInfo:
        target, ignore = target_and_ignore(sample)
        box = target_box(target)
        if box is None:
            return MaskInfo(np.zeros_like(target), {"box": None})
        self.segmenter.set_image(sample.image_path, read_rgb(sample))
        if self.multimask:
            candidates = self.segmenter.box_masks(box)
            mask = max(candidates, key=lambda m: lisa_iou(m, target, ignore))
        else:
            mask, _ = self.segmenter.box_mask(box)
        return MaskInfo(mask, {"box": box})


class OracleSamBest:
    def __init__(self, segmenter: SamSegmenter, weights: str, settings: dict):
        from segment_anything import SamAutomaticMaskGenerator

        self.generator = SamAutomaticMaskGenerator(segmenter.sam, **settings)
        self.weights = weights
        self.settings = settings
        self._cached: tuple[object, list[np.ndarray]] = (None, [])

    def describe(self) -> dict:
        return {"weights": {"sam": self.weights}, "oracle": True, "reads": "ground-truth mask",
                "automatic_mask_settings": self.settings}

    def proposals(self, sample: Sample) -> list[np.ndarray]:
        # Queries of one image share its proposals (all-texts protocol): generate once per image.
        if self._cached[0] != sample.image_path:
            found = self.generator.generate(read_rgb(sample))
            self._cached = (sample.image_path, [m["segmentation"] for m in found])
        return self._cached[1]

    def predict(self, sample: Sample, query: Query) -> MaskInfo:
        target, ignore = target_and_ignore(sample)
        if not target.any():
            return MaskInfo(np.zeros_like(target), {"proposals": None})
        proposals = self.proposals(sample)
        if not proposals:
            return MaskInfo(np.zeros_like(target), {"proposals": 0})
        ious = [lisa_iou(m, target, ignore) for m in proposals]
        best = int(np.argmax(ious))
        return MaskInfo(proposals[best], {"proposals": len(proposals), "best_iou": round(ious[best], 6)})


declare("oracle-box-sam", SAM)
declare("oracle-sam-best", SAM)


@register("oracle-box-sam", "ground-truth box → SAM: the ceiling of box-prompted SAM", weights=SAM.model_id,
          oracle=True)
def build_oracle_box_sam(ctx: MethodContext) -> OracleBoxSam:
    segmenter, path = build_segmenter(ctx, "oracle-box-sam", first_slot=True)
    return OracleBoxSam(segmenter, str(path), option(ctx, "multimask", False, bool))


@register("oracle-sam-best", "SAM automatic masks, the best by IoU with ground truth: the ceiling of mask selection",
          weights=SAM.model_id, oracle=True)
def build_oracle_sam_best(ctx: MethodContext) -> OracleSamBest:
    segmenter, path = build_segmenter(ctx, "oracle-sam-best", first_slot=True)
    settings = {key: option(ctx, key, default, type(default)) for key, default in AUTOMATIC_DEFAULTS.items()}
    return OracleSamBest(segmenter, str(path), settings)
