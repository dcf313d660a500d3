"""ReasonSeg's gIoU and cIoU as a `torchmetrics.Metric`, for Lightning and plain torchmetrics loops.

The states are per-query integer tensors, concatenated across processes by torchmetrics itself: the query's
position in the split and what the scorer measures of its mask (|P ∧ target|, |P ∧ ignore|, |P|: the intersection,
and with the target's area the union, under whichever scoring rules). Every number then comes from our scorer
(`ReasonSegMetric`) over those rows, so `compute()` equals `reasonseg score` on the same masks to the last bit.
"""
from __future__ import annotations

import os

from ..extras import require_extra

require_extra("harness", "reasonseg.integrations.torchmetrics", ("torch", "torchmetrics"))

import torch  # noqa: E402
from torchmetrics import Metric  # noqa: E402
from torchmetrics.utilities import dim_zero_cat  # noqa: E402

from ..errors import ReasonSegError  # noqa: E402
from ..metrics.metric import ReasonSegMetric  # noqa: E402
from ..metrics.rules import Tally  # noqa: E402

STATES = ("query", "on_target", "on_ignore", "area")   # the last three are a rules.Tally


class _GatheredMetric(ReasonSegMetric):
    """The scorer over rows torchmetrics has already gathered from every rank: it must not gather again."""

    def gathered_states(self) -> list[dict]:
        return [self.state()]


class ReasonSegIoU(Metric):
    """gIoU and cIoU of a split, accumulated per query and synchronised by torchmetrics.

    `ReasonSegIoU("ReasonSeg/", split="val")` (a release folder, its published form or a cached Hub id), then
    `update(sample_id, text_index, mask)` (or lists of ids and text indices with an N x H x W batch, masks at the
    image's size; float masks need `threshold=`), `compute()` -> `{"giou": tensor, "ciou": tensor}` and
    `document()` -> the whole results document of `reasonseg score` (groups, intervals, per-query rows).
    Scorer options (`rules`, `protocol`, `missing`, `bootstrap`, ...) are `ReasonSegMetric`'s; other
    keyword arguments (`sync_on_compute`, `process_group`, ...) are torchmetrics'.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, data: str | os.PathLike, split: str, protocol: str | None = None, *, rules: str | None = None,
                 missing: str | None = None, empty_union: str | None = None, bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95, threshold: float | None = None, method: str | None = None,
                 cache_dir: str | os.PathLike | None = "default", **kwargs) -> None:
        super().__init__(**kwargs)
        if data is None:
            raise ReasonSegError("ReasonSegIoU needs a release: ReasonSegIoU('ReasonSeg/', split='val')",
                                 hint="for bare mask pairs use reasonseg.score_masks")
        self.scorer = _GatheredMetric(data, split, protocol, rules=rules, missing=missing, empty_union=empty_union,
                                      bootstrap=bootstrap, seed=seed, confidence=confidence, method=method,
                                      threshold=threshold, cache_dir=cache_dir)
        masks = self.scorer.ground_truth.masks
        self.keys = [(sid, k) for sid, mask in masks.items() for k in range(max(len(mask.texts), 1))]
        self.positions = {key: i for i, key in enumerate(self.keys)}
        for name in STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, sample_id, text_index, mask, threshold: float | None = None) -> None:
        """Score one query, or a batch (lists of ids and text indices with an N x H x W mask batch)."""
        self.scorer.reset()
        self.scorer.update(sample_id, text_index, mask, threshold=threshold)
        rows = [(self.positions[key], *tally) for key, tally in self.scorer.state()["queries"].items()]
        self.scorer.reset()
        if not rows:
            return
        for name, column in zip(STATES, zip(*rows, strict=True), strict=True):
            getattr(self, name).append(torch.tensor(column, dtype=torch.int64, device=self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        overall = self._results()["groups"]["overall"]
        return {name: torch.tensor(overall[name], dtype=torch.float64) for name in ("giou", "ciou")}

    def document(self) -> dict:
        """The results document of `reasonseg score` over every update (of every rank, synchronised first)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                               should_unsync=self._should_unsync):
            return self._results()

    def _rows(self) -> list[tuple[int, int, int, int]]:
        columns = [getattr(self, name) for name in STATES]
        if isinstance(columns[0], list) and not columns[0]:
            return []
        return list(zip(*(dim_zero_cat(c).tolist() for c in columns), strict=True))

    def _results(self) -> dict:
        self.scorer.reset()
        empty = self.scorer.state()
        try:
            for position, *tally in self._rows():   # one row at a time: a query seen twice must agree (checked)
                self.scorer.merge({**empty, "queries": {self.keys[position]: Tally(*tally)}})
            return self.scorer.compute()
        finally:
            self.scorer.reset()
