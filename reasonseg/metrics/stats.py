"""Uncertainty for gIoU and cIoU: bootstrap confidence intervals and paired comparisons (CI and p-value both from
one paired bootstrap).

The resampling unit is the image (all queries of an image move together), so `all-texts` scores are not
treated as independent. cIoU is resampled as a ratio of sums, never as a mean of ratios. Everything is seeded.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ResultsError
from .iou import CIOU_EPS, COUNT_EPS, QueryScore, scores_from_results

_CHUNK = 256  # resamples per vectorised batch: bounds memory at _CHUNK x n_images
# What a paired comparison's p-value tests (`compare` prints it under its table, `report` above its own).
P_VALUE_NOTE = ("CI and p from one paired bootstrap over images (p: twice the share of resampled differences on the "
                "far side of 0, so p < 0.05 where the 95% CI excludes 0)")


@dataclass(frozen=True)
class ImageSums:
    """Per-image sufficient statistics: sum of query IoUs, number of scored queries, sum of I, sum of U."""

    ids: list[str]
    iou_sum: np.ndarray
    count: np.ndarray
    inter: np.ndarray
    union: np.ndarray

    def giou(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        if weights is None:
            return float(self.iou_sum.sum() / (self.count.sum() + COUNT_EPS))
        return (weights @ self.iou_sum) / (weights @ self.count + COUNT_EPS)

    def ciou(self, weights: np.ndarray | None = None) -> np.ndarray | float:
        if weights is None:
            return float(self.inter.sum() / (self.union.sum() + CIOU_EPS))
        return (weights @ self.inter) / (weights @ self.union + CIOU_EPS)


def image_sums(scores: Sequence[QueryScore], empty_union: str = "one") -> ImageSums:
    order: dict[str, int] = {}
    for s in scores:
        order.setdefault(s.id, len(order))
    n = len(order)
    iou_sum, count = np.zeros(n), np.zeros(n)
    inter, union = np.zeros(n), np.zeros(n)
    for s in scores:
        i = order[s.id]
        value = s.iou(empty_union)
        if value is not None:
            iou_sum[i] += value
            count[i] += 1
        inter[i] += s.intersection
        union[i] += s.union
    return ImageSums(list(order), iou_sum, count, inter, union)


def _resample_weights(n: int, n_resamples: int, seed: int):
    """Batches of bootstrap weights: row b counts how often each image was drawn in resample b."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        size = min(_CHUNK, n_resamples - done)
        draws = rng.integers(0, n, size=(size, n))
        flat = (draws + (np.arange(size) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)
        done += size


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    alpha = (1.0 - confidence) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def bootstrap_ci(sums: ImageSums, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
                 ) -> tuple[list[float], list[float]]:
    """Percentile intervals of gIoU and cIoU over images resampled with replacement."""
    n = len(sums.ids)
    if n == 0 or n_resamples <= 0:
        return [float("nan")] * 2, [float("nan")] * 2
    gious, cious = [], []
    for w in _resample_weights(n, n_resamples, seed):
        gious.append(sums.giou(w))
        cious.append(sums.ciou(w))
    return _interval(np.concatenate(gious), confidence), _interval(np.concatenate(cious), confidence)


@dataclass(frozen=True)
class Difference:
    metric: str
    a: float
    b: float
    delta: float            # b - a
    ci: list[float]
    p_value: float


def _aligned(a: ImageSums, b: ImageSums) -> tuple[ImageSums, ImageSums]:
    if set(a.ids) != set(b.ids):
        only_a, only_b = sorted(set(a.ids) - set(b.ids)), sorted(set(b.ids) - set(a.ids))
        raise ResultsError(f"the two results score different images ({len(only_a)} only in A, {len(only_b)} only "
                           f"in B, e.g. {(only_a or only_b)[0]!r})", hint="compare results of the same split")
    index = [b.ids.index(i) for i in a.ids] if a.ids != b.ids else list(range(len(b.ids)))
    b = ImageSums(a.ids, b.iou_sum[index], b.count[index], b.inter[index], b.union[index])
    return a, b


def as_image_sums(scored, empty_union: str | None = None) -> ImageSums:
    """ImageSums from ImageSums, an `Evaluation`, a results document (dict) or a sequence of `QueryScore`.

    `empty_union` defaults to the document's (or the evaluation's) own policy, else "one".
    """
    if isinstance(scored, ImageSums):
        return scored
    document = scored if isinstance(scored, dict) else getattr(scored, "document", None)
    policy = empty_union or (document or {}).get("empty_union") or "one"
    if isinstance(scored, dict):
        return image_sums(scores_from_results(scored), policy)
    return image_sums(getattr(scored, "scores", scored), policy)


def paired_comparison(a, b, n_resamples: int = 2000, *, seed: int = 0, confidence: float = 0.95,
                      empty_union: str | None = None) -> list[Difference]:
    """B minus A for gIoU and cIoU: a paired bootstrap CI and a two-sided p-value from the same resamples.

    `a` and `b` are `ImageSums`, `Evaluation`s, results documents, or lists of `QueryScore` (see
    `as_image_sums`). Images are resampled with replacement, both methods' results of an image together. The
    p-value is the CI turned around: twice the share of resampled differences on the far side of 0 (+1 corrected,
    so never 0; its floor is 2 / (n_resamples + 1)). So the interval excludes 0 exactly when p is small, and both
    answer one question: is the difference of the metric itself (not of the methods' whole output) distinguishable
    from 0? A permutation test, which swaps the methods image by image, answers another: whether the two methods'
    per-image results are exchangeable. For cIoU (a ratio of sums) that fails whenever one method's unions are much
    larger, however uncertain the cIoU difference is, so it is not used.
    """
    a, b = _aligned(as_image_sums(a, empty_union), as_image_sums(b, empty_union))
    n = len(a.ids)
    out = []
    for metric in ("giou", "ciou"):
        value_a, value_b = getattr(a, metric)(), getattr(b, metric)()
        deltas = [getattr(b, metric)(w) - getattr(a, metric)(w) for w in _resample_weights(n, n_resamples, seed)]
        if n and deltas:
            deltas = np.concatenate(deltas)
            ci = _interval(deltas, confidence)
            tail = min(int((deltas <= 0).sum()), int((deltas >= 0).sum()))
            p = min(1.0, 2 * (tail + 1) / (len(deltas) + 1))
        else:
            ci, p = [float("nan")] * 2, float("nan")
        out.append(Difference(metric, value_a, value_b, value_b - value_a, ci, p))
    return out
