"""The scorer as an object for training and validation loops, in the style of torchmetrics.

`ReasonSegMetric` keeps per-query intersection and union as its state (never the masks), so it is small, merges
across processes exactly, and `compute()` returns the same results document as `reasonseg score` on the same
predictions. Masks may be numpy arrays or tensors on any device; torch is never imported here (a tensor is
recognised by its `detach` method, and `torch.distributed` is used only when the caller has imported torch).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import MaskError, ReasonSegError, SubmissionError
from ..masks import as_array, binary_mask, intervals_area, mask_to_intervals
from ..schema import canonical_split
from .groundtruth import GroundTruth, load_ground_truth
from .iou import measure
from .report import results_document
from .rules import Rules, Tally, resolve_rules, score_one, score_tallies, wanted_keys
from .scoring import (
    check_known,
    check_size,
    evaluation_document,
    wanted_queries,
    warn_if_degenerate,
)

IGNORE_VALUE = 255   # in a ground-truth mask given to update(preds, target): pixels scored as neither


class ReasonSegMetric:
    """gIoU and cIoU of a split (or of bare mask pairs), accumulated update by update.

    With a release: `ReasonSegMetric("ReasonSeg/", split="val")` (a release folder or its published form, or a
    `GroundTruth` from `load_ground_truth`), then `update(sample_id, text_index, mask)` per query and `compute()`
    for the results document of `reasonseg score`: same groups, gIoU, cIoU, CIs and per-query rows.

    Without a release: `ReasonSegMetric()`, then `update(preds, target)` with a predicted and a ground-truth mask
    (or batches N x H x W); ground-truth pixels equal to 255 are ignored, as in LISA.

    `rules` names the scoring rules (`metrics.rules.PROFILES`: lisa by default, or another scorer's); `protocol`,
    `missing` and `empty_union`, where given, override their axes. The state is what one pass measures
    (`rules.Tally`), so the rules apply at `compute()`.

    `merge(other)` adds another metric's state; under `torch.distributed` (when initialised), `compute()` gathers
    every rank's state first, so a DDP validation loop gets the numbers of one process over the whole split. A
    query given twice with the same scores counts once (DistributedSampler pads ranks by repeating samples); given
    twice with different scores it is an error.
    """

    def __init__(self, data: str | os.PathLike | GroundTruth | None = None, split: str | None = None,
                 protocol: str | None = None, *, rules: str | Rules | None = None, missing: str | None = None,
                 empty_union: str | None = None, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                 method: str | None = None, threshold: float | None = None,
                 cache_dir: str | os.PathLike | None = "default", strict: bool = False, process_group=None):
        resolve_rules(rules, protocol=protocol, missing=missing, empty_union=empty_union)  # refused before loading
        if isinstance(data, GroundTruth):
            if split is not None and canonical_split(split) != data.split:
                raise ReasonSegError(f"the ground truth is of split {data.split!r}, not {split!r}")
            self.ground_truth = data
        elif data is not None:
            if split is None:
                raise ReasonSegError("ReasonSegMetric needs split= with a release, e.g. split='val'")
            self.ground_truth = load_ground_truth(data, split, cache_dir=cache_dir, strict=strict)
        else:
            self.ground_truth = None
        # Hub-mirror ground truth has its own default rules.
        self.rules = resolve_rules(rules, protocol=protocol, missing=missing, empty_union=empty_union,
                                   gt=self.ground_truth)
        self.protocol, self.missing, self.empty_union = self.rules.protocol, self.rules.missing, self.rules.empty_union
        self.bootstrap, self.seed, self.confidence = bootstrap, seed, confidence
        self.method, self.threshold, self.process_group = method, threshold, process_group
        self.reset()

    # ----------------------------------------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget every update."""
        # The state is what one pass measures (rules.Tally), so any rules derive I and U from it at compute().
        self._queries: dict[tuple[str, int], Tally] = {}
        self._pairs: list[tuple[Tally, int, int, int, int]] = []   # bare pairs: tally, |T|, |ignore|, height, width

    def state(self) -> dict:
        """The picklable state: what `merge` adds and what is gathered across processes."""
        return {"fingerprint": self.ground_truth.fingerprint if self.ground_truth else None,
                "rules": self.rules.label, "queries": dict(self._queries), "pairs": list(self._pairs)}

    def merge(self, other: ReasonSegMetric | dict) -> ReasonSegMetric:
        """Add another metric's state (or a `state()` dict) to this one; returns self."""
        state = other.state() if isinstance(other, ReasonSegMetric) else other
        mine = self.ground_truth.fingerprint if self.ground_truth else None
        if state["fingerprint"] != mine or state.get("rules") != self.rules.label:
            raise ReasonSegError(f"cannot merge metrics of different data or rules (annotations "
                                 f"{state['fingerprint']} / {state.get('rules')} into {mine} / {self.rules.label})")
        for key, tally in state["queries"].items():
            self._add(key, tally)
        self._pairs.extend(state["pairs"])
        return self

    def _add(self, key: tuple[str, int], tally: Tally) -> None:
        known = self._queries.get(key)
        if known is not None and known != tally:
            sid, k = key
            raise SubmissionError(f"text_index {k} was updated twice with different masks", sample_id=sid,
                                  hint="give each query one mask (call reset() between evaluation runs)")
        self._queries[key] = tally

    def __len__(self) -> int:
        return len(self._queries) + len(self._pairs)

    def __repr__(self) -> str:
        if self.ground_truth is None:
            return f"ReasonSegMetric(masks, {len(self._pairs)} pairs, rules={self.rules.label!r})"
        n = len(wanted_keys(self.rules, self.ground_truth))
        return (f"ReasonSegMetric(split={self.ground_truth.split!r}, rules={self.rules.label!r}, "
                f"{len(self._queries)} of {n} queries updated)")

    # ---------------------------------------------------------------------------------------------- update

    def update(self, *args, threshold: float | None = None) -> None:
        """`update(sample_id, text_index, mask)` with a release, `update(preds, target)` without one.

        Batches work too: lists of ids and text indices with an N x H x W mask batch, or N x H x W preds and
        targets. Float masks need a threshold (here or in the constructor), unless they hold only 0 and 1.
        """
        threshold = self.threshold if threshold is None else threshold
        if self.ground_truth is None:
            if len(args) != 2:
                raise ReasonSegError("without a release, call update(preds, target) with mask arrays; with one, "
                                     "ReasonSegMetric(data, split=...) takes update(sample_id, text_index, mask)")
            for pred, target in zip(*_pairs_of(*args), strict=True):
                self._update_pair(pred, target, threshold)
            return
        if len(args) != 3:
            raise ReasonSegError("call update(sample_id, text_index, mask) (or lists of ids and text indices with "
                                 "a mask batch)")
        sample_id, text_index, mask = args
        if isinstance(sample_id, str):
            self._update_query(sample_id, text_index, mask, threshold)
            return
        ids, indices = list(sample_id), _as_ints(text_index)
        masks = list(mask) if isinstance(mask, (list, tuple)) else _unbatch(mask, len(ids))
        if not len(ids) == len(indices) == len(masks):
            raise ReasonSegError(f"update got {len(ids)} ids, {len(indices)} text indices and {len(masks)} masks")
        for sid, k, m in zip(ids, indices, masks, strict=True):
            self._update_query(sid, k, m, threshold)

    def _update_query(self, sample_id: str, text_index: int, mask, threshold: float | None) -> None:
        gt = self.ground_truth
        if not isinstance(text_index, (int, np.integer)) or isinstance(text_index, bool) or text_index < 0:
            raise SubmissionError(f"text_index must be a non-negative integer, got {text_index!r}",
                                  sample_id=str(sample_id), field="text_index")
        key = (str(sample_id), int(text_index))
        check_known(gt, [key], None)
        array = _binary(mask, threshold, key[0])
        check_size(gt, key[0], array.shape[0], array.shape[1], None)
        mask = gt.masks[key[0]]
        self._add(key, Tally(*measure(mask.target, mask.ignore, mask_to_intervals(array))))

    def _update_pair(self, pred, target, threshold: float | None) -> None:
        array = _binary(pred, threshold, None)
        truth = as_array(target)
        while truth.ndim > 2 and truth.shape[0] == 1:
            truth = truth[0]
        if truth.shape != array.shape:
            raise MaskError(f"the predicted mask is {array.shape[0]}x{array.shape[1]} but the ground truth is "
                            f"{'x'.join(map(str, truth.shape))}", hint="score masks at the ground truth's size")
        if truth.dtype.kind == "f" and not np.isin(truth, (0, 1, IGNORE_VALUE)).all():
            raise MaskError("a ground-truth mask holds 0, 1 (target) and 255 (ignore); got other float values")
        ignore = truth == IGNORE_VALUE
        target = (truth != 0) & ~ignore
        target_iv, ignore_iv = mask_to_intervals(target), mask_to_intervals(ignore)
        tally = Tally(*measure(target_iv, ignore_iv, mask_to_intervals(array)))
        self._pairs.append((tally, intervals_area(target_iv), intervals_area(ignore_iv), *truth.shape))

    # --------------------------------------------------------------------------------------------- compute

    def gathered_states(self) -> list[dict]:
        """This process's state, or every rank's (in rank order) when torch.distributed is initialised."""
        torch = sys.modules.get("torch")
        dist = getattr(torch, "distributed", None)
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return [self.state()]
        world = dist.get_world_size(self.process_group)
        if world == 1:
            return [self.state()]
        states = [None] * world
        dist.all_gather_object(states, self.state(), group=self.process_group)
        return states

    def compute(self) -> dict:
        """The results document over every update (of every rank under torch.distributed). State is kept."""
        total = ReasonSegMetric.__new__(ReasonSegMetric)
        total.__dict__.update(self.__dict__)
        total.reset()
        for state in self.gathered_states():
            total.merge(state)
        return total._document()

    def _document(self) -> dict:
        options = {"bootstrap": self.bootstrap, "seed": self.seed, "confidence": self.confidence}
        gt, rules = self.ground_truth, self.rules
        if gt is None:
            # Bare pairs are one query each (no texts, no missing ones); the rules' other axes apply.
            scores = [score_one(rules, str(i), 0, tally, target, ignore, h, w, None, None)
                      for i, (tally, target, ignore, h, w) in enumerate(self._pairs)
                      if rules.empty_targets == "kept" or rules.target_area(target, ignore) > 0]
            _warn_pairs(self._pairs)
            return results_document(scores, split=None, protocol="masks", method=self.method, dataset={},
                                    predictions_sha256=None, rules=rules, **options)
        wanted = wanted_queries(gt, self._queries, where=None, rules=rules)
        scores = score_tallies(rules, gt, self._queries)
        warn_if_degenerate(gt, ((sid, self._queries[sid, k].area) for sid, k in wanted if (sid, k) in self._queries))
        return evaluation_document(gt, scores, rules, None, self.method, **options)


def _warn_pairs(pairs: list) -> None:
    import warnings

    for count, what in ((sum(t.area == h * w for t, _, _, h, w in pairs), "the whole image"),
                        (sum(t.area == 0 for t, *_ in pairs), "nothing (an empty mask)")):
        if pairs and count > 0.5 * len(pairs):
            warnings.warn(f"{count} of {len(pairs)} masks are predicted as {what}", stacklevel=3)


def _binary(mask, threshold: float | None, sample_id: str | None) -> np.ndarray:
    try:
        return binary_mask(mask, threshold)
    except MaskError as exc:
        raise MaskError(exc.message, sample_id=sample_id, field="mask") from None


def _as_ints(values) -> list[int]:
    array = as_array(values).reshape(-1)
    if array.dtype.kind not in "iu":
        raise SubmissionError(f"text indices must be integers, got dtype {array.dtype}", field="text_index")
    return [int(v) for v in array]


def _unbatch(masks, n: int) -> list:
    array = as_array(masks) if not isinstance(masks, np.ndarray) else masks
    if array.ndim == 2 and n == 1:
        return [array]
    if array.ndim == 4 and array.shape[1] == 1:     # N x 1 x H x W, as models return
        array = array[:, 0]
    if array.ndim != 3:
        raise MaskError(f"a batch of masks must be N x H x W, got shape {array.shape}")
    return list(array)


def _pairs_of(preds, targets) -> tuple[list, list]:
    if isinstance(preds, (list, tuple)) or isinstance(targets, (list, tuple)):
        preds, targets = list(preds), list(targets)
        if len(preds) != len(targets):
            raise MaskError(f"{len(preds)} predicted masks but {len(targets)} ground-truth masks")
        return preds, targets
    p, t = as_array(preds), as_array(targets)
    if p.ndim == 4 and p.shape[1] == 1:
        p = p[:, 0]
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if p.ndim == 3 and t.ndim == 3 and p.shape[0] == t.shape[0] and p.shape[0] != 1:
        return list(p), list(t)
    return [p], [t]


def score_masks(pred_masks, gt_masks, *, threshold: float | None = None, empty_union: str | None = None,
                rules: str | Rules | None = None) -> dict:
    """gIoU, cIoU and per-pair IoU of predicted masks against ground-truth masks (255 = ignore), LISA's rules
    unless `rules` names other ones.

    `pred_masks` and `gt_masks` are sequences of 2-D masks or N x H x W batches (numpy or tensors).
    Returns {"n", "giou", "ciou", "iou": [one per pair]}.
    """
    metric = ReasonSegMetric(empty_union=empty_union, rules=rules, threshold=threshold, bootstrap=0)
    metric.update(pred_masks, gt_masks)
    doc = metric.compute()
    overall = doc["groups"]["overall"]
    return {"n": overall["n"], "giou": overall["giou"], "ciou": overall["ciou"],
            "iou": [q["iou"] for q in doc["queries"]]}


