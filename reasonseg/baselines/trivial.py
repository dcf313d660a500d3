"""Trivial baselines that bound the metric from below: nothing, everything, and the training-set prior."""
from __future__ import annotations

import numpy as np

from ..dataset import load_split
from ..errors import MethodError
from ..masks import rasterize_shapes, resize_mask
from ..schema import TARGET, Query, Sample
from .registry import MethodContext, register

PRIOR_GRID = 64  # the common grid that train masks of every size are averaged on
PRIOR_SIGMA = 4.0  # grid cells: smooths a mean of few masks into one blob instead of scattered fragments


class EmptyMask:
    def predict(self, sample: Sample, query: Query) -> np.ndarray:
        return np.zeros((sample.height, sample.width), bool)


class FullMask:
    def predict(self, sample: Sample, query: Query) -> np.ndarray:
        return np.ones((sample.height, sample.width), bool)


class CenterPrior:
    """The mean train target mask, in normalised image coordinates, thresholded to the mean target area.

    Thresholding at the quantile that keeps the mean train foreground fraction (rather than at 0.5, which
    on a diffuse mean often keeps nothing) predicts a blob of the typical size where targets usually are.
    """

    def __init__(self, mean_mask: np.ndarray, area_fraction: float):
        self.mean_mask = mean_mask.astype(np.float32)
        cutoff = np.quantile(self.mean_mask, 1.0 - area_fraction) if area_fraction > 0 else np.inf
        self.grid_mask = (self.mean_mask >= cutoff) & (self.mean_mask > 0)

    @classmethod
    def from_train(cls, samples: list[Sample]) -> CenterPrior:
        import cv2

        total = np.zeros((PRIOR_GRID, PRIOR_GRID), np.float64)
        fractions = []
        for s in samples:
            target = (rasterize_shapes(s.shapes, s.height, s.width) == TARGET).astype(np.float32)
            fractions.append(float(target.mean()))
            total += cv2.resize(target, (PRIOR_GRID, PRIOR_GRID), interpolation=cv2.INTER_AREA)
        mean = cv2.GaussianBlur(total / max(len(samples), 1), (0, 0), PRIOR_SIGMA)
        return cls(mean, float(np.mean(fractions)) if fractions else 0.0)

    def predict(self, sample: Sample, query: Query) -> np.ndarray:
        return resize_mask(self.grid_mask.astype(np.uint8), sample.height, sample.width).astype(bool)


@register("empty", "predicts an empty mask for every query (scores 1.0 only on empty ground truth)")
def build_empty(ctx: MethodContext) -> EmptyMask:
    return EmptyMask()


@register("full", "predicts the whole image for every query")
def build_full(ctx: MethodContext) -> FullMask:
    return FullMask()


@register("center-prior", "the mean train target mask, resized and thresholded to the mean target area")
def build_center_prior(ctx: MethodContext) -> CenterPrior:
    if not (ctx.data_root / "train").is_dir():
        raise MethodError("center-prior needs the train split to estimate its prior", path=str(ctx.data_root),
                          hint="point DATA at a release with a train/ folder")
    return CenterPrior.from_train(load_split(ctx.data_root, "train"))
