"""Match a predictions set to the ground truth of a split and compute every query's I and U.

The checks here (unknown ids, text indices, sizes, absent queries) serve both the file path (`reasonseg score`)
and the in-memory metric (`metrics.metric.ReasonSegMetric`), so both refuse and accept exactly the same inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import ReasonSegError, SubmissionError
from ..masks import intervals_area, rle_to_intervals
from ..schema import Prediction, canonical_split
from ..submission import (
    Limits,
    PredictedMask,
    PredictionSet,
    SplitIndex,
    named_split,
    predictions_document,
    read_predictions,
)
from .groundtruth import GroundTruth, GroundTruthMask, load_ground_truth
from .iou import QueryScore, measure
from .report import results_document
from .rules import (
    DEFAULT,
    HUB_MIRROR,
    HUB_MIRROR_LOSSES,
    PROFILES,
    Rules,
    Tally,
    first_items,
    ground_truth_form,
    option_for,
    refuse_missing,
    resolve_rules,
    score_tallies,
    summary,
    wanted_keys,
)

DRIFT_REFERENCE = DEFAULT.name     # the rules (lisa) every other profile's drift row is compared with
DEGENERATE_SHARE = 0.5   # warn when more than this share of queries is predicted as the whole image or nothing


def check_text_index(gt: GroundTruth, sample_id: str, text_index: int, where: str | None) -> None:
    n_texts = max(len(gt.masks[sample_id].texts), 1)
    if text_index >= n_texts:
        raise SubmissionError(f"text_index {text_index} but the image has {n_texts} text(s)", path=where,
                              sample_id=sample_id, field="text_index")


def _image_is_exif_rotated(gt: GroundTruth, mask: GroundTruthMask) -> bool:
    from ..dataset import image_size

    path = gt.root / mask.image
    if not path.is_file():
        return False
    from PIL import Image

    try:
        with Image.open(path) as img:
            raw_w, raw_h = img.size
        return (raw_h, raw_w) == (mask.width, mask.height) and image_size(path) == (mask.height, mask.width)
    except (OSError, ValueError, ReasonSegError):
        return False


def check_size(gt: GroundTruth, sample_id: str, height: int, width: int, where: str | None) -> None:
    """The predicted mask must have the image's size; a swapped size is named for what it most likely is."""
    mask = gt.masks[sample_id]
    if (height, width) == (mask.height, mask.width):
        return
    message = f"mask size {height}x{width} but the image is {mask.height}x{mask.width} (height x width)"
    if (height, width) == (mask.width, mask.height):
        if _image_is_exif_rotated(gt, mask):
            hint = ("the image has a 90° EXIF orientation, which the ground truth applies (as cv2.imread does); "
                    "predict on the rotated image, e.g. PIL.ImageOps.exif_transpose or cv2.imread, do not resize")
        else:
            hint = "height and width are swapped: the mask looks transposed (mask.T?); do not resize it"
    else:
        hint = "predict at the original image size, or resize the mask to it (nearest neighbour)"
    raise SubmissionError(message, path=where, sample_id=sample_id, field="mask.size", hint=hint)


def check_split(gt: GroundTruth, file_split: str | None, where: str | None) -> None:
    """A predictions file that names a split must name this one."""
    if file_split and canonical_split(file_split) != gt.split:   # `validation` (the Hub's name) is `val`
        raise SubmissionError(f"predictions are for split {file_split!r} but scoring split {gt.split!r}",
                              path=where, field="split", hint=f"pass --split {file_split}")


def split_index(gt: GroundTruth) -> SplitIndex:
    """These checks for one split, for the reader to apply to each prediction before it decodes the mask (so a
    file's cost is bounded by the split)."""
    return SplitIndex(
        gt.split, sum(max(len(m.texts), 1) for m in gt.masks.values()),
        max((m.height * m.width for m in gt.masks.values()), default=0),
        # partials, not lambdas: the index travels to the sandboxed reader (reasonseg.sandbox) pickled
        check_key=partial(_check_key, gt), has_id=gt.masks.__contains__, check_ids=partial(check_ids, gt),
        check_size=partial(check_size, gt), check_split=partial(check_split, gt))


def _check_key(gt: GroundTruth, sample_id: str, text_index: int, where: str | None) -> None:
    check_known(gt, [(sample_id, text_index)], where)


def check_ids(gt: GroundTruth, ids: Iterable[str], where: str | None) -> None:
    """Refuse ids the split lacks, all at once: how many, the first few, and the other split of the release they
    belong to when they all belong to one (a file of the wrong split)."""
    unknown = sorted({sid for sid in ids if sid not in gt.masks})
    if not unknown:
        return
    other = split_holding(gt, unknown)
    raise SubmissionError(f"{len(unknown)} prediction id(s) are not in split {gt.split!r}: {first_items(unknown)}",
                          path=where, field="id",
                          hint=f"they are ids of split {other!r}: score them against that split" if other else
                          "ids are image file stems of that split")


def split_holding(gt: GroundTruth, ids: list[str], checked: int = 50) -> str | None:
    """The other split folder of the release that holds an annotation for each of `ids` (the first `checked`), if
    one does. Ids are user input: one that is not a plain file name is never looked up."""
    names = ids[:checked]
    if gt.form != "release" or not gt.root.is_dir() or not all(
            0 < len(sid) < 250 and sid not in (".", "..") and not any(c in sid for c in "/\\\0") for sid in names):
        return None
    for folder in sorted(p for p in gt.root.iterdir() if p.is_dir() and p.name != gt.split):
        if all((folder / f"{sid}.json").is_file() for sid in names):
            return folder.name
    return None


def check_known(gt: GroundTruth, keys: Iterable[tuple[str, int]], where: str | None) -> None:
    keys = list(keys)
    check_ids(gt, (sid for sid, _ in keys), where)
    for sid, k in sorted(keys):
        check_text_index(gt, sid, k, where)


def warn_unscored(rules: Rules, given: Iterable[tuple[str, int]], wanted: Iterable[tuple[str, int]],
                  where: str | None = None) -> None:
    """Under text-0 rules, predictions for other texts of a known image are accepted and left unscored: say so."""
    if rules.texts != "first":
        return
    unscored = len(set(given) - set(wanted))
    if unscored:
        option = option_for(where, "--protocol all-texts", 'protocol="all-texts"')
        warnings.warn(f"{unscored} prediction(s) for text_index > 0 are not scored: rules {rules.label!r} score "
                      f"text 0 of each image (pass {option} to score every text)", stacklevel=3)


def wanted_queries(gt: GroundTruth, given: Iterable[tuple[str, int]], protocol: str | None = None,
                   missing: str | None = None, where: str | None = None, *, rules: Rules | str | None = None
                   ) -> list[tuple[str, int]]:
    """The scored queries in the split's order; raises when some have no prediction and the rules refuse that."""
    rules = resolve_rules(rules, protocol=protocol, missing=missing, gt=gt)
    given = set(given)
    wanted = wanted_keys(rules, gt)
    if rules.missing == "error":
        refuse_missing(rules, [key for key in wanted if key not in given], len(wanted), where)
    warn_unscored(rules, given, wanted, where)
    return wanted


def match_predictions(gt: GroundTruth, preds: PredictionSet, protocol: str | None = None,
                      missing: str | None = None, *, rules: Rules | str | None = None
                      ) -> dict[tuple[str, int], PredictedMask | None]:
    """The prediction of every scored query (None: scored as the rules score a missing one); raises one
    `SubmissionError` per kind of mismatch."""
    rules = resolve_rules(rules, protocol=protocol, missing=missing, gt=gt)
    check_split(gt, preds.split, preds.path)
    check_known(gt, preds.masks, preds.path)
    matched = {}
    for key in wanted_queries(gt, preds.masks, where=preds.path, rules=rules):
        pred = preds.masks.get(key)
        if pred is not None:
            check_size(gt, key[0], pred.height, pred.width, preds.path)
        if pred is not None or rules.missing != "skip":
            matched[key] = pred
    return matched


def measure_predictions(gt: GroundTruth, matched: dict[tuple[str, int], PredictedMask | None]
                        ) -> dict[tuple[str, int], Tally]:
    """The one pass over the masks: each given prediction's tally against its image (enough for every rules)."""
    tallies = {}
    for (sid, k), pred in matched.items():
        if pred is not None:
            mask = gt.masks[sid]
            tallies[sid, k] = Tally(*measure(mask.target, mask.ignore, pred.intervals))
    return tallies


def score_predictions(gt: GroundTruth, preds: PredictionSet, protocol: str | None = None,
                      missing: str | None = None, *, rules: Rules | str | None = None) -> list[QueryScore]:
    """Per-query intersection and union, each query counted exactly once, in the split's order."""
    rules = resolve_rules(rules, protocol=protocol, missing=missing, gt=gt)
    matched = match_predictions(gt, preds, rules=rules)
    return score_tallies(rules, gt, measure_predictions(gt, matched), preds.path)


# The start of warn_if_degenerate's message, for `warnings.filterwarnings(message=...)` where it is expected.
DEGENERATE_WARNING = r"\d+ of \d+ queries are predicted as "


def warn_if_degenerate(gt: GroundTruth, areas: Iterable[tuple[str, int]]) -> None:
    """Warn when most queries are predicted as the whole image or as nothing: a threshold or format slip.

    `areas` holds (sample id, predicted area) per predicted query: queries without a prediction (scored as empty
    under missing="empty") say nothing about the threshold, so they are left out.
    """
    areas = list(areas)
    if not areas:
        return
    empty = sum(area == 0 for _, area in areas)
    full = sum(area == gt.masks[sid].height * gt.masks[sid].width > 0 for sid, area in areas)
    for count, what, cause in ((full, "the whole image", "float probabilities or logits written as masks without "
                                "a threshold?"), (empty, "nothing (an empty mask)", "is the threshold too high?")):
        if count > DEGENERATE_SHARE * len(areas):
            warnings.warn(f"{count} of {len(areas)} queries are predicted as {what}: {cause}", stacklevel=3)


def prediction_set(predictions: Iterable[Prediction], split: str | None = None, method: str | None = None
                   ) -> PredictionSet:
    """An in-memory predictions set from `Prediction` objects (e.g. `prediction_from_mask`).

    Its sha256 is that of the file `write_predictions(path, predictions, split, method)` would write.
    """
    predictions = list(predictions)
    raw = json.dumps(predictions_document(predictions, split, method)).encode()
    preds = PredictionSet("<in memory>", "memory", split=split, method=method,
                          sha256="sha256:" + hashlib.sha256(raw).hexdigest())
    for p in predictions:
        h, w = p.size
        preds.add(p.id, p.text_index, PredictedMask(h, w, rle_to_intervals(p.rle)))
    return preds


@dataclass(repr=False)
class Evaluation:
    ground_truth: GroundTruth
    predictions: PredictionSet
    scores: list[QueryScore]
    document: dict

    def __repr__(self) -> str:
        overall = self.document["groups"]["overall"]
        ciou = "None" if overall["ciou"] is None else f"{overall['ciou']:.4f}"
        return (f"Evaluation(method={self.document.get('method')!r}, split={self.document['split']!r}, "
                f"rules={self.document.get('rules', 'lisa')!r}, protocol={self.document['protocol']!r}, "
                f"n={overall['n']}, giou={overall['giou']:.4f}, ciou={ciou})")


def evaluation_document(gt: GroundTruth, scores: list[QueryScore], rules: Rules, predictions_sha256: str | None,
                        method: str | None, *, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
                        ) -> dict:
    """The results document of scores against a split's ground truth (one builder for files and the metric)."""
    return results_document(scores, split=gt.split, protocol=rules.protocol, method=method, dataset=dataset_of(gt),
                            predictions_sha256=predictions_sha256, rules=rules, bootstrap=bootstrap, seed=seed,
                            confidence=confidence)


def dataset_of(gt: GroundTruth) -> dict:
    """What a results document records of the ground truth it was scored on."""
    dataset = {"root": str(gt.root), "manifest_sha256": gt.manifest_sha256, "annotations_sha256": gt.fingerprint}
    if ground_truth_form(gt) != "release":
        dataset["form"] = ground_truth_form(gt)
    return dataset


def evaluate_predictions(gt: GroundTruth, preds: PredictionSet | Iterable[Prediction], protocol: str | None = None,
                         *, rules: Rules | str | None = None, missing: str | None = None,
                         empty_union: str | None = None, bootstrap: int = 1000, seed: int = 0,
                         confidence: float = 0.95, method: str | None = None, drift: bool = False) -> Evaluation:
    """Score predictions against ready ground truth (what the leaderboard keeps warm).

    `preds` is a read `PredictionSet` or any iterable of `Prediction` (e.g. from `prediction_from_mask`).
    `rules` names a profile of `rules.PROFILES` (default `lisa`); `protocol`, `missing` and `empty_union`, where
    given, override its axes. With `drift`, the document also holds the drift table's rows (`metrics.drift`: the
    same predictions under every profile) under "drift".
    """
    rules = resolve_rules(rules, protocol=protocol, missing=missing, empty_union=empty_union, gt=gt)
    if not isinstance(preds, PredictionSet):
        preds = prediction_set(preds, gt.split, method)
    scores = score_predictions(gt, preds, rules=rules)
    warn_if_degenerate(gt, ((s.id, intervals_area(preds.masks[s.id, s.text_index].intervals))
                            for s in scores if (s.id, s.text_index) in preds.masks))
    document = evaluation_document(gt, scores, rules, preds.sha256, method or preds.method, bootstrap=bootstrap,
                                   seed=seed, confidence=confidence)
    if drift:
        document["drift"] = drift_rows(gt, preds)
    return Evaluation(gt, preds, scores, document)


def drift_rows(gt: GroundTruth, preds: PredictionSet, profiles: dict[str, Rules] = PROFILES) -> list[dict]:
    """Every profile's gIoU, cIoU and count on these predictions, and its difference from `lisa`."""
    check_split(gt, preds.split, preds.path)
    check_known(gt, preds.masks, preds.path)
    # One pass: the widest query set any profile wants (every text if one scores all), each mask measured once.
    widest = Rules("lisa", texts="all" if any(r.texts == "all" for r in profiles.values()) else "first",
                   missing="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # text-0 rules leave other texts unscored: expected here
        tallies = measure_predictions(gt, match_predictions(gt, preds, rules=widest))
    rows = []
    for name, rules in profiles.items():
        try:
            rows.append({"rules": name, **summary(rules, score_tallies(rules, gt, tallies, preds.path))})
        except SubmissionError as exc:
            rows.append({"rules": name, "error": exc.message})
    reference = next((r for r in rows if r["rules"] == DRIFT_REFERENCE and "error" not in r), None)
    for row in rows:
        if "error" in row:
            continue
        for metric in ("giou", "ciou"):
            ok = reference is not None and row[metric] is not None and reference[metric] is not None
            row[f"{metric}_minus_{DRIFT_REFERENCE}"] = row[metric] - reference[metric] if ok else None
    return rows


def read_inputs(data_root: str | os.PathLike, predictions: str | os.PathLike, split: str | None, *,
                cache_dir: str | os.PathLike | None = "default", strict: bool = False, limits: Limits = Limits()
                ) -> tuple[GroundTruth, PredictionSet]:
    """A split's ground truth and a predictions file checked against it; `split=None` takes the file's split.
    Ground truth in a lossy form (the Hub mirrors') says once what it lost."""
    split = split or named_split(predictions, limits)
    if not split:
        raise SubmissionError("the predictions do not name their split", path=str(predictions),
                              hint="pass --split, e.g. --split val")
    gt = load_ground_truth(data_root, split, cache_dir=cache_dir, strict=strict)
    if ground_truth_form(gt) == HUB_MIRROR:
        warnings.warn(HUB_MIRROR_LOSSES, stacklevel=2)
    preds = read_predictions(predictions, limits, split_index(gt))
    preds.method = preds.method or default_method(Path(predictions), preds.kind)
    return gt, preds


def default_method(path: Path, kind: str) -> str | None:
    """A PNG folder or zip names no method: its name stands for it (`preds-clipseg/`, `clipseg.zip`), so that
    `table` keeps one method on one row. None for a name with control characters (it is never shown raw)."""
    from ..text import unsafe_char

    name = path.name if kind == "png-folder" else path.stem if kind == "png-zip" else ""
    return name if name and unsafe_char(name) is None else None


def evaluate(data_root: str | os.PathLike, predictions: str | os.PathLike, split: str | None,
             protocol: str | None = None, *, cache_dir: str | os.PathLike | None = "default", strict: bool = False,
             limits: Limits = Limits(), **options) -> Evaluation:
    """Read a release split and a predictions file, and score them (`reasonseg score`). `split=None` takes the
    split the predictions file names; `options` are those of `evaluate_predictions` (`rules=` among them)."""
    gt, preds = read_inputs(data_root, predictions, split, cache_dir=cache_dir, strict=strict, limits=limits)
    return evaluate_predictions(gt, preds, protocol, **options)
