"""Match a predictions set to the ground truth of a split and compute every query's I and U."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import SubmissionError
from ..masks import EMPTY_INTERVALS
from ..submission import Limits, PredictedMask, PredictionSet, read_predictions
from .groundtruth import GroundTruth, GroundTruthMask, load_ground_truth
from .iou import PROTOCOLS, QueryScore, intersection_union
from .report import results_document

MISSING_POLICIES = ("error", "empty")


def _first(items: list, n: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def match_predictions(gt: GroundTruth, preds: PredictionSet, protocol: str = "lisa",
                      missing: str = "error") -> dict[tuple[str, int], PredictedMask | None]:
    """The prediction of every scored query; raises one `SubmissionError` per kind of mismatch.

    Under `lisa`, predictions for other texts of a known image are accepted and left unscored. With
    `missing="empty"`, a query without a prediction is scored as an empty mask instead of failing.
    """
    if protocol not in PROTOCOLS:
        raise SubmissionError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if missing not in MISSING_POLICIES:
        raise SubmissionError(f"unknown missing policy {missing!r}; choose one of {', '.join(MISSING_POLICIES)}")
    if preds.split and preds.split != gt.split:
        raise SubmissionError(f"predictions are for split {preds.split!r} but scoring split {gt.split!r}",
                              path=preds.path, field="split", hint=f"pass --split {preds.split}")
    unknown = sorted({sid for sid, _ in preds.masks if sid not in gt.masks})
    if unknown:
        raise SubmissionError(f"{len(unknown)} prediction id(s) are not in split {gt.split!r}: {_first(unknown)}",
                              path=preds.path, field="id", hint="ids are image file stems of that split")
    for (sid, k) in sorted(preds.masks):
        n_texts = max(len(gt.masks[sid].texts), 1)
        if k >= n_texts:
            raise SubmissionError(f"text_index {k} but the image has {n_texts} text(s)", path=preds.path,
                                  sample_id=sid, field="text_index")
    wanted = [q.key for q in gt.queries(protocol)]
    absent = [key for key in wanted if key not in preds.masks]
    if absent and missing == "error":
        shown = [sid if k == 0 else f"{sid}#{k}" for sid, k in absent]
        raise SubmissionError(f"{len(absent)} of {len(wanted)} queries have no prediction: {_first(shown)}",
                              path=preds.path, field="predictions",
                              hint="predict every query, or pass --missing empty to score them as empty masks")
    matched = {}
    for key in wanted:
        pred = preds.masks.get(key)
        if pred is not None:
            mask = gt.masks[key[0]]
            if (pred.height, pred.width) != (mask.height, mask.width):
                raise SubmissionError(f"mask size {pred.height}x{pred.width} but the image is "
                                      f"{mask.height}x{mask.width} (height x width)", path=preds.path,
                                      sample_id=key[0], field="mask.size",
                                      hint="resize the mask to the original image size")
        matched[key] = pred
    return matched


def score_query(gt: GroundTruthMask, text_index: int, pred: PredictedMask | None) -> QueryScore:
    intervals = pred.intervals if pred is not None else EMPTY_INTERVALS
    inter, union = intersection_union(gt.target, gt.ignore, intervals)
    return QueryScore(gt.id, text_index, gt.is_sentence, inter, union, gt.source)


def score_predictions(gt: GroundTruth, preds: PredictionSet, protocol: str = "lisa",
                      missing: str = "error") -> list[QueryScore]:
    """Per-query intersection and union, each query counted exactly once, in the split's order."""
    matched = match_predictions(gt, preds, protocol, missing)
    return [score_query(gt.masks[sid], k, pred) for (sid, k), pred in matched.items()]


@dataclass
class Evaluation:
    ground_truth: GroundTruth
    predictions: PredictionSet
    scores: list[QueryScore]
    document: dict


def evaluate_predictions(gt: GroundTruth, preds: PredictionSet, protocol: str = "lisa", *,
                         missing: str = "error", empty_union: str = "one", bootstrap: int = 1000, seed: int = 0,
                         confidence: float = 0.95, method: str | None = None) -> Evaluation:
    """Score an already-read predictions set against ready ground truth (what the leaderboard keeps warm)."""
    scores = score_predictions(gt, preds, protocol, missing)
    dataset = {"root": str(gt.root), "manifest_sha256": gt.manifest_sha256,
               "annotations_sha256": gt.fingerprint}
    document = results_document(scores, split=gt.split, protocol=protocol, method=method or preds.method,
                                dataset=dataset, predictions_sha256=preds.sha256, empty_union=empty_union,
                                bootstrap=bootstrap, seed=seed, confidence=confidence)
    return Evaluation(gt, preds, scores, document)


def evaluate(data_root: str | os.PathLike, predictions: str | os.PathLike, split: str, protocol: str = "lisa", *,
             cache_dir: str | os.PathLike | None = "default", strict: bool = False, limits: Limits = Limits(),
             **options) -> Evaluation:
    """Read a release split and a predictions file, and score them (`reasonseg score`)."""
    gt = load_ground_truth(data_root, split, cache_dir=cache_dir, strict=strict)
    preds = read_predictions(predictions, limits)
    return evaluate_predictions(gt, preds, protocol, **options)
