"""Scoring rules: how a predictions file becomes gIoU and cIoU, as a few axes, and the scorers' profiles on them.

Each ReasonSeg scorer in the field (LISA's and those of later models) is one point on these axes; docs/protocol.md
states every profile in words and where in its scorer's code each rule comes from. The axes are implemented once
here: a prediction is measured once against the split (|P ∧ T|, |P ∧ ignore|, |P|), and every profile derives its
I and U from those counts and the image's |T| and |ignore| (target and ignore are disjoint), so scoring under all
profiles costs one pass over the masks.

The older options are points on the same axes: `--protocol all-texts` is texts=all, `--empty-union` is the
empty_union axis and `--missing` the missing axis; given explicitly, they override the chosen profile's value.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ReasonSegError, SubmissionError
from ..hub_mirror import MIRROR_FORM, MIRROR_LOSSES
from ..masks import intervals_area
from ..text import display_text
from .iou import EMPTY_UNION_POLICIES, EPSILONS, QueryScore, mean_iou, ratio_of_sums, size_class

IGNORE = {
    "kept": "ignore pixels are scored as neither target nor background: removed from the prediction (LISA)",
    "merged": "ignore pixels become target (the Hub mirrors' boolean cast of the LISA mask)",
    "dropped": "ignore pixels count as background (a mask of the target pixels only)",
}
TEXTS = {
    "first": "text 0 of each image is its one query",
    "all": "every text of an image is its own query, all sharing the image's mask",
}
EMPTY_TARGETS = {
    "kept": "an image whose target has no pixel is scored like any other",
    "dropped": "an image whose target has no pixel is left out, with its predictions",
}
MISSING = {
    "error": "a query without a prediction stops scoring",
    "skip": "a query without a prediction is not counted",
    "empty": "a query without a prediction is scored as an empty mask",
    "penalty": "a query without a prediction is recorded as I = 0, U = |GT| and counted as 0, even on an empty GT",
}
CIOU = {
    "sum": "cIoU = sum of I over sum of U",
    "none": "the scorer computes no cIoU",
}
AVERAGE = {
    "query": "gIoU is the mean over the counted queries (every scorer here; mmdetection's mask per image is one)",
}
AXES: dict[str, Mapping[str, str]] = {
    "ignore": IGNORE, "texts": TEXTS, "empty_targets": EMPTY_TARGETS, "empty_union": EMPTY_UNION_POLICIES,
    "missing": MISSING, "epsilon": EPSILONS, "ciou": CIOU, "average": AVERAGE,
}
# The axes two results must share to be compared or tabulated together; `missing` only decides which rows exist.
COMPARED_AXES = tuple(axis for axis in AXES if axis != "missing")


@dataclass(frozen=True)
class Rules:
    """A named point on the axes. `name` is the profile it started from; `label` says what was changed."""

    name: str = "lisa"
    ignore: str = "kept"
    texts: str = "first"
    empty_targets: str = "kept"
    empty_union: str = "one"
    missing: str = "error"
    epsilon: str = "lisa"
    ciou: str = "sum"
    average: str = "query"

    def axes(self) -> dict[str, str]:
        return {axis: getattr(self, axis) for axis in AXES}

    def overrides(self) -> dict[str, str]:
        """The axes on which these rules differ from their profile."""
        base = PROFILES[self.name].axes()
        return {axis: value for axis, value in self.axes().items() if base[axis] != value}

    @property
    def label(self) -> str:
        changed = self.overrides()
        return self.name + (" (" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")" if changed else "")

    @property
    def protocol(self) -> str:
        """The older `protocol` name of the texts axis, kept in results documents."""
        return "lisa" if self.texts == "first" else "all-texts"

    def is_default(self) -> bool:
        return self == DEFAULT

    # ----------------------------------------------------------------------------------------- arithmetic

    def intersection_union(self, tally: Tally, target: int, ignore: int) -> tuple[int, int]:
        """I and U of a query from its tally and the image's |T| and |ignore|, by the ignore axis."""
        if self.ignore == "kept":
            return tally.on_target, tally.area + target - tally.on_target - tally.on_ignore
        if self.ignore == "merged":
            inter = tally.on_target + tally.on_ignore
            return inter, tally.area + target + ignore - inter
        return tally.on_target, tally.area + target - tally.on_target

    def target_area(self, target: int, ignore: int) -> int:
        return target + ignore if self.ignore == "merged" else target

    def iou(self, score: QueryScore) -> float | None:
        return score.iou(self.empty_union, self.epsilon)

    def giou(self, scores: Iterable[QueryScore]) -> float:
        return mean_iou(self.counted_ious(scores), self.epsilon)

    def ciou_of(self, scores: Iterable[QueryScore]) -> float | None:
        if self.ciou == "none":
            return None
        scores = list(scores)
        return ratio_of_sums(sum(s.intersection for s in scores), sum(s.union for s in scores), self.epsilon)

    def counted_ious(self, scores: Iterable[QueryScore]) -> list[float]:
        return [v for v in (self.iou(s) for s in scores) if v is not None]


DEFAULT = Rules()
PROFILES: dict[str, Rules] = {
    "lisa": DEFAULT,
    "x-sam": Rules("x-sam", texts="all", empty_targets="dropped", missing="skip", epsilon="none"),
    "visionreasoner": Rules("visionreasoner", ignore="merged", empty_union="zero", missing="penalty",
                            epsilon="none"),
    "seg-zero": Rules("seg-zero", ignore="merged", empty_union="skip", missing="penalty", epsilon="none",
                      ciou="none"),
    "mmdet-refseg": Rules("mmdet-refseg", ignore="dropped", empty_union="zero", epsilon="none"),
}
ALL = "all"   # --rules all: every profile side by side (the drift table)

# The Hub mirrors' form of the ground truth (a boolean mask with ignore folded in, text 0 only, no is_sentence):
# scored under visionreasoner rules unless told otherwise.
HUB_MIRROR = MIRROR_FORM
HUB_MIRROR_LOSSES = f"{MIRROR_LOSSES}; scored under visionreasoner rules unless --rules names others"


class Tally(NamedTuple):
    """What one pass measures of one prediction against its image: |P ∧ T|, |P ∧ ignore|, |P|."""

    on_target: int
    on_ignore: int
    area: int


NOTHING = Tally(0, 0, 0)


def ground_truth_form(gt) -> str:
    return getattr(gt, "form", "release")


def profile(name: str) -> Rules:
    if name not in PROFILES:
        raise ReasonSegError(f"unknown rules {name!r}; choose one of {', '.join(PROFILES)} (or {ALL} to score "
                             "under every one)", field="--rules")
    return PROFILES[name]


def resolve_rules(rules: str | Rules | None = None, *, protocol: str | None = None, empty_union: str | None = None,
                  missing: str | None = None, gt=None) -> Rules:
    """The rules to score under: a profile (default `lisa`, or `visionreasoner` for Hub-mirror ground truth), with
    the older options, where given, as overrides of their axes."""
    if isinstance(rules, Rules):
        base = rules
    else:
        default = "visionreasoner" if gt is not None and ground_truth_form(gt) == HUB_MIRROR else "lisa"
        base = profile(rules or default)
    changes = {}
    if protocol is not None:
        from .iou import PROTOCOLS

        if protocol not in PROTOCOLS:
            raise SubmissionError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        changes["texts"] = "first" if protocol == "lisa" else "all"
    if empty_union is not None:
        changes["empty_union"] = empty_union
    if missing is not None:
        changes["missing"] = missing
    for axis, value in changes.items():
        if value not in AXES[axis]:
            raise SubmissionError(f"unknown {axis.replace('_', '-')} policy {value!r}; choose one of "
                                  f"{', '.join(AXES[axis])}")
    return dataclasses.replace(base, **changes)


def rules_of_document(document: Mapping) -> Rules:
    """The rules a results document was scored under (documents from before rules existed: `lisa` with their
    protocol and empty-union policy)."""
    name = document.get("rules") or "lisa"
    axes = document.get("rule_axes") or {}
    base = PROFILES.get(name)
    if base is None:
        raise ReasonSegError(f"results name unknown rules {name!r}; this reasonseg knows {', '.join(PROFILES)}",
                             field="rules")
    known = {axis: value for axis, value in axes.items() if axis in AXES and value in AXES[axis]}
    rules = dataclasses.replace(base, **known)
    if not axes:   # an older document: its protocol and empty-union policy are the axes it records
        from .iou import PROTOCOLS

        protocol = document.get("protocol") if document.get("protocol") in PROTOCOLS else None   # e.g. "masks"
        rules = resolve_rules(rules, protocol=protocol, empty_union=document.get("empty_union"))
    return rules


def compared_label(rules: Rules) -> str:
    """The rules as `compare` and `table` tell them apart (which rows exist is not part of it)."""
    return dataclasses.replace(rules, missing=PROFILES[rules.name].missing).label


def document_rules_label(document: Mapping) -> str:
    return compared_label(rules_of_document(document))


def rules_marked(label: str, document: Mapping) -> str:
    """A table row's label, with its rules where they are not the default (`lisa`, first text, empty union one)."""
    rules = document_rules_label(document)
    return label if rules == "lisa" else f"{label} [rules {rules}]"


def check_one_rules(labels: Mapping[str, str], *, wanted: str | None = None, beside_paper: bool = False,
                    hint: str | None = None) -> None:
    """Refuse results (file → `compared_label`) under different rules, under other rules than `wanted`, or, shown
    `beside_paper`, under other rules than the paper's (lisa): numbers under different rules do not compare."""
    from ..errors import ResultsError

    kinds = sorted(set(labels.values()))
    wanted = wanted or ("lisa" if beside_paper else None)
    if len(kinds) > 1:
        message = "results under different rules: " + ", ".join(f"{path} ({k})" for path, k in labels.items())
    elif kinds and wanted and kinds != [wanted]:
        why = "the paper's rows are under lisa rules" if beside_paper else f"rules {wanted} were asked for"
        message = f"{why}, these results are under {kinds[0]}: {', '.join(labels)}"
    else:
        return
    raise ResultsError(message, hint=hint)


# ------------------------------------------------------------------------------------------------ scoring

def wanted_keys(rules: Rules, gt) -> list[tuple[str, int]]:
    """The queries these rules ask a prediction for, in the split's order (dropped images left out)."""
    keys = []
    for sid, mask in gt.masks.items():
        if rules.empty_targets != "dropped" or rules.target_area(intervals_area(mask.target),
                                                                  intervals_area(mask.ignore)) > 0:
            keys.extend((sid, k) for k in range(1 if rules.texts == "first" else max(len(mask.texts), 1)))
    return keys


def score_tallies(rules: Rules, gt, tallies: Mapping[tuple[str, int], Tally], where: str | None = None
                  ) -> list[QueryScore]:
    """Every counted query's I and U under `rules`, in the split's order; raises `SubmissionError` when a wanted
    query has no tally and the rules refuse missing predictions."""
    known_kind = ground_truth_form(gt) != HUB_MIRROR     # the mirrors have no is_sentence
    out, absent, n_wanted = [], [], 0
    for sid, mask in gt.masks.items():
        target, ignore = intervals_area(mask.target), intervals_area(mask.ignore)
        if rules.empty_targets == "dropped" and rules.target_area(target, ignore) == 0:
            continue
        for k in range(1 if rules.texts == "first" else max(len(mask.texts), 1)):
            n_wanted += 1
            tally, penalty = tallies.get((sid, k)), False
            if tally is None:
                if rules.missing in ("error", "skip"):
                    if rules.missing == "error":
                        absent.append((sid, k))
                    continue
                tally, penalty = NOTHING, rules.missing == "penalty"
            out.append(score_one(rules, sid, k, tally, target, ignore, mask.height, mask.width,
                                 mask.is_sentence if known_kind else None, mask.source, penalty))
    refuse_missing(rules, absent, n_wanted, where)
    return out


def score_one(rules: Rules, sid: str, text_index: int, tally: Tally, target: int, ignore: int, height: int,
              width: int, is_sentence: bool | None, source: str | None, penalty: bool = False) -> QueryScore:
    """One query's row under `rules`, from its tally and its image's |T|, |ignore| and size."""
    inter, union = rules.intersection_union(tally, target, ignore)
    size = size_class(rules.target_area(target, ignore), height, width)
    return QueryScore(sid, text_index, is_sentence, inter, union, source, size, penalty)


def refuse_missing(rules: Rules, absent: list[tuple[str, int]], n_wanted: int, where: str | None) -> None:
    """The one error for wanted queries without a prediction (nothing when none is absent)."""
    if absent:
        shown = [sid if k == 0 else f"{sid}#{k}" for sid, k in absent]
        raise SubmissionError(f"{len(absent)} of {n_wanted} queries have no prediction: {first_items(shown)}",
                              path=where, field="predictions", hint=_missing_hint(rules, where))


def option_for(where: str | None, cli: str, python: str) -> str:
    """How a hint names an option: without a file (`ReasonSegMetric`, predictions in memory, `where` None or
    `<in memory>`) the caller is Python, not the command line."""
    return python if where is None or where.startswith("<") else cli


def _missing_hint(rules: Rules, where: str | None) -> str:
    option = option_for(where, "--missing empty", 'missing="empty"')
    advice = f"predict every query, or pass {option} to score them as empty masks"
    if rules.name == "lisa":
        return advice
    return f"{rules.name} rules have no rule for a missing prediction (its scorer never lacks one): {advice}"


def first_items(items: list, n: int = 5) -> str:
    shown = ", ".join(display_text(i) for i in items[:n])   # ids are user input: escaped, each cut to 200
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def summary(rules: Rules, scores: list[QueryScore]) -> dict:
    """gIoU, cIoU (None where the scorer computes none) and the number of queries counted in gIoU."""
    ious = rules.counted_ious(scores)
    return {"giou": mean_iou(ious, rules.epsilon), "ciou": rules.ciou_of(scores), "n_queries_counted": len(ious)}
