"""The leaderboard table as data: one entry per (team, method) in the paper's Table 1 layout, badges, the rows the
paper reported, and a mark on each cell that is not distinguishable from the next better entry in its column.

The mark comes from a paired bootstrap over the images both entries scored (`metrics.stats.paired_comparison`):
when the 95% interval of the difference contains 0 the two cannot be told apart on this split. Comparisons are
cached by (submission, submission, group): results never change once scored.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..metrics.iou import QueryScore
from ..metrics.report import TABLE1_COLUMNS, group_scores, scores_from_results
from ..metrics.stats import Difference, image_sums, paired_comparison
from ..paper import PAPER_TABLE1, SOURCE
from .db import SubmissionRow
from .worker import public_aggregates, rounded

METRICS = ("giou", "ciou")
SIGNIFICANCE_RESAMPLES = 1000
SIGNIFICANCE_CONFIDENCE = 0.95
RANKING_RULE = ("One row per team: the method of its most recent scored test submission (of its most recent scored "
                "val submission when it has none on test), with that method's latest scored result on each split. "
                "Every submission stays stored and listed on the team's page; revoked teams are not ranked.")


@dataclass(frozen=True)
class Badge:
    slug: str
    label: str
    title: str


BADGES = {
    "trained-on-val": Badge("trained-on-val", "trained on val",
                            "ReasonSeg val was in the training data: its val numbers are not held-out"),
    "test-checkpoint": Badge("test-checkpoint", "checkpoint chosen on test",
                             "the checkpoint was selected by its test score: the test numbers are optimistic"),
    "oracle": Badge("oracle", "oracle", "uses ground-truth information: an upper bound, not a method"),
    "reported": Badge("reported", "reported in paper", f"copied from {SOURCE}; not scored here"),
}


@dataclass(frozen=True)
class Mark:
    """This cell is not distinguishable from `above` (the next better entry in the column)."""

    above: str
    delta: float        # this entry minus the one above
    ci: tuple[float, float]


@dataclass
class Entry:
    method: str
    team: str | None
    reported: bool = False
    meta: dict = field(default_factory=dict)
    submissions: dict[str, SubmissionRow] = field(default_factory=dict)   # split -> latest scored submission
    cells: dict[tuple[str, str], dict] = field(default_factory=dict)      # (split, group) -> aggregate row
    marks: dict[tuple[str, str, str], Mark] = field(default_factory=dict)  # (split, group, metric) -> mark
    badges: list[Badge] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.method if self.team is None else f"{self.method} ({self.team})"

    def value(self, split: str, group: str, metric: str) -> float | None:
        cell = self.cells.get((split, group))
        return None if not cell or cell.get("n", 1) == 0 else cell.get(metric)


def _badges(meta: dict, reported: bool) -> list[Badge]:
    out = []
    if meta.get("trained_on_val"):
        out.append(BADGES["trained-on-val"])
    if meta.get("checkpoint_selected_on") == "test":
        out.append(BADGES["test-checkpoint"])
    if meta.get("oracle"):
        out.append(BADGES["oracle"])
    if reported:
        out.append(BADGES["reported"])
    return out


class Significance:
    """Paired comparisons between scored submissions, computed once and kept (bounded)."""

    def __init__(self, loader: Callable[[int], SubmissionRow | None] | None = None, max_items: int = 4096):
        self.loader = loader          # fetches a submission's per-query results when the row came without them
        self._cache: OrderedDict[tuple, list[Difference]] = OrderedDict()
        self._scores: OrderedDict[int, dict[str, list[QueryScore]]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def _groups(self, sub: SubmissionRow) -> dict[str, list[QueryScore]]:
        with self._lock:
            if sub.id in self._scores:
                return self._scores[sub.id]
        results = sub.results
        if results is None and self.loader is not None:
            full = self.loader(sub.id)
            results = full.results if full else None
        groups = group_scores(scores_from_results(results or {"queries": []}, f"submission {sub.id}"))
        with self._lock:
            self._scores[sub.id] = groups
            while len(self._scores) > self.max_items // 8:
                self._scores.popitem(last=False)
        return groups

    def compare(self, upper: SubmissionRow, lower: SubmissionRow, group: str) -> list[Difference] | None:
        """lower minus upper on the images both scored in `group`; None when they share none."""
        key = (upper.id, lower.id, group)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        a, b = self._groups(upper).get(group, []), self._groups(lower).get(group, [])
        shared = {s.id for s in a} & {s.id for s in b}
        if not shared:
            return None
        policy_a = (upper.summary or {}).get("empty_union", "one")
        policy_b = (lower.summary or {}).get("empty_union", "one")
        diffs = paired_comparison(image_sums([s for s in a if s.id in shared], policy_a),
                                  image_sums([s for s in b if s.id in shared], policy_b),
                                  n_resamples=SIGNIFICANCE_RESAMPLES, seed=0,
                                  confidence=SIGNIFICANCE_CONFIDENCE)
        with self._lock:
            self._cache[key] = diffs
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        return diffs


def build_entries(scored: dict[str, list[SubmissionRow]], significance: Significance | None = None,
                  include_reported: bool = True) -> list[Entry]:
    """Entries from the latest scored submission of each (team, method) per split, plus the paper's rows.

    Sorted as the page shows them first: test overall gIoU, then val gIoU, best first; missing values last.
    """
    by_key: dict[tuple[str, str], Entry] = {}
    for split, rows in scored.items():
        for sub in rows:
            entry = by_key.setdefault((sub.team, sub.method), Entry(sub.method, sub.team))
            entry.submissions[split] = sub
            for group, row in (public_aggregates(sub) or {}).get("groups", {}).items():
                entry.cells[(split, group)] = row
    entries = one_per_team(list(by_key.values()))
    for entry in entries:
        for split in ("val", "test"):    # test metadata wins: it is the row's headline
            if split in entry.submissions:
                entry.meta.update(entry.submissions[split].meta)
        entry.badges = _badges(entry.meta, False)
    if significance is not None:
        mark_entries(entries, significance)
    if include_reported:
        for row in PAPER_TABLE1:
            entry = Entry(row.method, None, reported=True, meta={"source": row.source, **row.meta})
            for split in ("val", "test"):
                for group, cell in row.groups(split).items():
                    entry.cells[(split, group)] = {**cell, "n": None}
            entry.badges = _badges({}, True)
            entries.append(entry)
    return sort_entries(entries, [("test", "overall", "giou"), ("val", "overall", "giou")])


def one_per_team(entries: list[Entry]) -> list[Entry]:
    """Each team's ranked entry, by RANKING_RULE: latest scored test submission first, else latest scored val."""
    def recency(entry: Entry) -> tuple:
        test, val = entry.submissions.get("test"), entry.submissions.get("val")
        return (test is not None, test.id if test else 0, val.id if val else 0)

    kept: dict[str | None, Entry] = {}
    for entry in entries:
        if entry.team not in kept or recency(entry) > recency(kept[entry.team]):
            kept[entry.team] = entry
    return list(kept.values())


def sort_entries(entries: list[Entry], keys: list[tuple[str, str, str]]) -> list[Entry]:
    def key(entry: Entry):
        out = []
        for split, group, metric in keys:
            value = entry.value(split, group, metric)
            out += [value is None, -(value or 0.0)]
        return out + [entry.reported, entry.label.lower()]
    return sorted(entries, key=key)


def mark_entries(entries: list[Entry], significance: Significance) -> None:
    """Mark each measured cell that cannot be told apart from the next better measured entry in its column."""
    for split, group in TABLE1_COLUMNS:
        for metric in METRICS:
            column = [e for e in entries if not e.reported and split in e.submissions
                      and e.value(split, group, metric) is not None]
            column.sort(key=lambda e: -e.value(split, group, metric))
            for upper, lower in zip(column, column[1:], strict=False):
                diffs = significance.compare(upper.submissions[split], lower.submissions[split], group)
                if not diffs:
                    continue
                diff = next(d for d in diffs if d.metric == metric)
                if diff.ci[0] <= 0.0 <= diff.ci[1]:
                    delta, ci = diff.delta, (diff.ci[0], diff.ci[1])
                    if split == "test":    # served like the aggregates: to what the page shows
                        delta, ci = rounded(delta), tuple(rounded(list(ci)))
                    lower.marks[(split, group, metric)] = Mark(upper.label, delta, ci)


def split_rows(entries: list[Entry], split: str) -> list[dict]:
    """The JSON rows of one split (`GET /api/leaderboard?split=`), ranked by its overall gIoU."""
    have = [e for e in entries if any(s == split for s, _ in e.cells)]
    rows = []
    for rank, entry in enumerate(sort_entries(have, [(split, "overall", "giou")]), start=1):
        sub = entry.submissions.get(split)
        groups = {g: dict(cell) for (s, g), cell in entry.cells.items() if s == split}
        rows.append({
            "rank": rank, "method": entry.method, "team": entry.team, "reported": entry.reported,
            "submission_id": sub.id if sub else None, "scored_at": sub.finished_at if sub else None,
            "meta": entry.meta, "badges": [b.label for b in entry.badges], "groups": groups,
            "not_distinguishable_from_above": {
                g: {m: entry.marks[(split, g, m)].__dict__ if (split, g, m) in entry.marks else None
                    for m in METRICS} for g in groups},
        })
    return rows
