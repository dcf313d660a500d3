"""Per-query intersection and union, and the gIoU / cIoU aggregates with the LISA conventions (docs/protocol.md §3).

State and result are separate, as in torchmetrics: `QueryScore` rows (per-query I and U) are the state; every
aggregate is derived from them. All counts are exact integers; only the final ratios are floats.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ResultsError
from ..masks import Coverage, Intervals, intervals_area

IOU_EPS = 1e-5      # added to each query's union
COUNT_EPS = 1e-5    # added to the query count by the reference's AverageMeter
CIOU_EPS = 1e-10    # added to the summed union

PROTOCOLS = {
    "lisa": "text[0] of each image is the one query (the reference's ValDataset)",
    "all-texts": "every text of an image is its own query, all sharing the image's mask",
}

# How a query whose union is empty (no target after ignore, empty prediction) counts. `one` is LISA's.
EMPTY_UNION_POLICIES = {
    "one": "scores 1.0 (LISA and its derivatives; the default)",
    "zero": "scores 0.0 (VisionReasoner)",
    "skip": "left out of gIoU (Seg-Zero, torchmetrics MeanIoU)",
}


# Target size classes, COCO-style: COCO's 32² and 96² pixel thresholds are for images of about 640 x 480, so
# they are applied as fractions of the image area (ReasonSeg images range from 640 to 4000+ pixels wide).
COCO_IMAGE_AREA = 640 * 480
SIZE_CLASSES = {
    "small": "target below 32²/(640·480) ≈ 0.33% of the image",
    "medium": "target between 0.33% and 96²/(640·480) = 3% of the image",
    "large": "target above 3% of the image",
}


def size_class(target_area: int, height: int, width: int) -> str | None:
    """small / medium / large by the target's share of the image; None for an empty target."""
    if target_area <= 0:
        return None
    # Integer cross-multiplication: the class never depends on float rounding.
    scaled = target_area * COCO_IMAGE_AREA
    if scaled < 32 * 32 * height * width:
        return "small"
    return "medium" if scaled < 96 * 96 * height * width else "large"


# How the ratios are taken. `lisa` is the reference's: 1e-5 on each union and on the query count, 1e-10 on the
# summed union. `none` is the exact ratio of the other scorers (an empty denominator gives 0.0).
EPSILONS = {
    "lisa": "iou = I / (U + 1e-5), gIoU = sum / (N + 1e-5), cIoU = sum I / (sum U + 1e-10) (LISA)",
    "none": "iou = I / U, gIoU = the mean, cIoU = sum I / sum U, exact (every other scorer)",
}


def query_iou(inter: int, union: int, empty_union: str = "one", epsilon: str = "lisa",
              penalty: bool = False) -> float | None:
    """One query's IoU; None when the query is left out of gIoU (`empty_union="skip"` on an empty union).

    A penalty row (a missing prediction scored I = 0, U = |GT|) always counts, as 0.0, whatever its union.
    """
    if penalty:
        return 0.0
    if union == 0:
        if empty_union == "skip":
            return None
        return 1.0 if empty_union == "one" else 0.0
    return inter / (union + IOU_EPS) if epsilon == "lisa" else inter / union


def mean_iou(ious: Sequence[float], epsilon: str = "lisa") -> float:
    if epsilon == "lisa":
        return sum(ious) / (len(ious) + COUNT_EPS)
    return sum(ious) / len(ious) if ious else 0.0


def ratio_of_sums(inter: int, union: int, epsilon: str = "lisa") -> float:
    if epsilon == "lisa":
        return inter / (union + CIOU_EPS)
    return inter / union if union else 0.0


@dataclass(frozen=True)
class QueryScore:
    id: str
    text_index: int
    is_sentence: bool | None        # None where the query kind is unknown (masks scored without a release)
    intersection: int
    union: int
    source: str | None = None
    size: str | None = None         # size_class of the target
    penalty: bool = False           # a missing prediction scored I = 0, U = |GT| and counted as 0 (rules.MISSING)

    def iou(self, empty_union: str = "one", epsilon: str = "lisa") -> float | None:
        return query_iou(self.intersection, self.union, empty_union, epsilon, self.penalty)


def scores_from_results(doc: dict, where: str = "results") -> list[QueryScore]:
    """The per-query scores a results document records (its `queries`), as `QueryScore`s."""
    try:
        return [QueryScore(q["id"], int(q["text_index"]), None if q["is_sentence"] is None else bool(q["is_sentence"]),
                           int(q["intersection"]), int(q["union"]), q.get("source"), q.get("size"),
                           bool(q.get("missing", False)))
                for q in doc["queries"]]
    except (KeyError, TypeError, ValueError):
        raise ResultsError("results 'queries' are malformed", path=where, field="queries") from None


def measure(target: Intervals, ignore: Intervals, prediction: Intervals) -> tuple[int, int, int]:
    """|P ∧ T|, |P ∧ ignore| and |P| of one prediction: with |T| and |ignore| they give I and U under every
    ground-truth derivation of `rules.IGNORE` (one pass serves every scorer's rules)."""
    covered = Coverage(prediction)
    return covered(target), covered(ignore), covered.total


def intersection_union(target: Intervals, ignore: Intervals, prediction: Intervals) -> tuple[int, int]:
    """I and U of one query, with ignore pixels removed from the prediction (LISA).

    The reference computes I = |P' ∧ T| and U = |P' ∨ T| with P' = P minus ignore. Because target and ignore are
    disjoint, that equals I = |P ∧ T| and U = |P| + |T| - |P ∧ T| - |P ∧ ignore|, which needs no full-size array.
    """
    on_target, on_ignore, area = measure(target, ignore, prediction)
    return on_target, area + intervals_area(target) - on_target - on_ignore


def giou(scores: Sequence[QueryScore], empty_union: str = "one", epsilon: str = "lisa") -> float:
    return mean_iou([v for v in (s.iou(empty_union, epsilon) for s in scores) if v is not None], epsilon)


def ciou(scores: Sequence[QueryScore], epsilon: str = "lisa") -> float:
    return ratio_of_sums(sum(s.intersection for s in scores), sum(s.union for s in scores), epsilon)
