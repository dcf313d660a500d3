"""Breakdowns (overall / short / long / per source), the results contract, and the paper's Table 1 layout."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..dataset import atomic_write_text
from ..errors import ResultsError
from ..inputs import check_input
from .iou import EMPTY_UNION_POLICIES, SIZE_CLASSES, QueryScore
from .iou import scores_from_results as scores_from_results  # where callers found it before
from .rules import Rules, resolve_rules
from .stats import bootstrap_ci, image_sums

FORMAT, VERSION = "reasonseg-results", 1


def group_scores(scores: Sequence[QueryScore]) -> dict[str, list[QueryScore]]:
    """overall, short (is_sentence false), long (true), small / medium / large (the target's size class, see
    `iou.SIZE_CLASSES`) when sizes are known, and `source:<name>` when samples name a source."""
    groups = {"overall": list(scores)}
    if not scores or any(s.is_sentence is not None for s in scores):
        groups["short"] = [s for s in scores if s.is_sentence is False]
        groups["long"] = [s for s in scores if s.is_sentence]
    if any(s.size is not None for s in scores):
        for size in SIZE_CLASSES:
            groups[size] = [s for s in scores if s.size == size]
    for source in sorted({s.source for s in scores if s.source}):
        groups[f"source:{source}"] = [s for s in scores if s.source == source]
    return groups


def summarize(scores: Sequence[QueryScore], empty_union: str = "one", bootstrap: int = 1000, seed: int = 0,
              confidence: float = 0.95, rules: Rules | None = None) -> dict[str, dict]:
    """Each group's n, gIoU, cIoU (None where the rules compute none) and, with `bootstrap`, their intervals.
    `rules` default to `lisa` with `empty_union`."""
    if empty_union not in EMPTY_UNION_POLICIES:
        raise ResultsError(f"unknown empty-union policy {empty_union!r}; choose one of "
                           f"{', '.join(EMPTY_UNION_POLICIES)}")
    rules = rules or resolve_rules(empty_union=empty_union)
    out = {}
    for name, members in group_scores(scores).items():
        row = {"n": len(members), "giou": rules.giou(members), "ciou": rules.ciou_of(members)}
        if bootstrap > 0 and members:
            # The intervals resample images with the LISA epsilons (stats.ImageSums): below 1e-7 from exact ratios.
            row["giou_ci"], row["ciou_ci"] = bootstrap_ci(image_sums(members, rules.empty_union), bootstrap, seed,
                                                          confidence)
            if row["ciou"] is None:
                del row["ciou_ci"]
        out[name] = row
    return out


def results_document(scores: Sequence[QueryScore], *, split: str, protocol: str | None, method: str | None,
                     dataset: dict, predictions_sha256: str, empty_union: str = "one", bootstrap: int = 1000,
                     seed: int = 0, confidence: float = 0.95, rules: Rules | None = None) -> dict:
    """The results contract. `rules` default to `lisa` with `protocol` (lisa / all-texts) and `empty_union`;
    `protocol` is recorded as given (e.g. "masks" for bare mask pairs), else as the rules' texts axis."""
    from .. import __version__
    from .iou import PROTOCOLS

    rules = rules or resolve_rules(protocol=protocol if protocol in PROTOCOLS else None, empty_union=empty_union)
    return {
        "format": FORMAT, "version": VERSION, "split": split, "protocol": protocol or rules.protocol,
        "rules": rules.name, "rule_axes": rules.axes(), "empty_union": rules.empty_union, "method": method,
        "groups": summarize(scores, rules.empty_union, bootstrap, seed, confidence, rules),
        "bootstrap": {"resamples": bootstrap, "seed": seed, "confidence": confidence, "unit": "image"},
        "queries": [{"id": s.id, "text_index": s.text_index, "is_sentence": s.is_sentence,
                     "intersection": s.intersection, "union": s.union, "iou": rules.iou(s),
                     **({"missing": True} if s.penalty else {}),
                     **({"size": s.size} if s.size else {}), **({"source": s.source} if s.source else {})}
                    for s in scores],
        "dataset": dataset, "predictions_sha256": predictions_sha256, "reasonseg_version": __version__,
    }


def write_results(path: str | os.PathLike, document: dict) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(document, indent=1) + "\n")
    return path


def read_results(path: str | os.PathLike) -> dict:
    path = check_input(path, "results file", ResultsError)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:   # ValueError: not UTF-8, not JSON, or an integer of over 4300 digits
        raise ResultsError(f"results file does not read as JSON: {exc}", path=str(path)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ResultsError(f"not a {FORMAT} version {VERSION} file", path=str(path), field="format")
    return doc


def check_same_data(document: dict, fingerprint: str, where: str, allow: bool = False) -> bool:
    """Whether a results document was scored on the annotations whose fingerprint is given.

    Raises `ResultsError` naming both hashes when it was not, unless `allow` (then it warns and returns False).
    A document without `annotations_sha256` cannot be checked and passes.
    """
    theirs = (document.get("dataset") or {}).get("annotations_sha256")
    if theirs is None or theirs == fingerprint:
        return True
    message = (f"results were scored on different data: annotations_sha256 {theirs} in the results, "
               f"{fingerprint} for split {document.get('split')!r} of this release")
    if allow:
        import warnings

        warnings.warn(f"{where}: {message} (allowed)", stacklevel=2)
        return False
    raise ResultsError(message, path=where, hint="score the predictions on this release again, or pass "
                                                 "--allow-different-data")


# ------------------------------------------------------------------------------------------------------ tables

def format_metric(row: dict | None, metric: str, with_ci: bool = True) -> str:
    """×100 with one decimal, as the paper; the CI in brackets when present."""
    if not row or row.get("n", 0) == 0 or row.get(metric) is None:
        return "-"
    text = f"{100 * row[metric]:.1f}"
    ci = row.get(f"{metric}_ci")
    if with_ci and ci and ci[0] == ci[0]:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


TABLE1_COLUMNS = (("val", "overall"), ("test", "short"), ("test", "long"), ("test", "overall"))


def table1_columns(results: dict[str, dict[str, dict]]) -> list[tuple[str, str]]:
    """The (split, group) columns of Table 1 that `results` (method → split → document) can fill: the paper's,
    less the splits nobody scored, then any other split's overall."""
    splits = {split for by_split in results.values() for split in by_split}
    columns = [(split, group) for split, group in TABLE1_COLUMNS if split in splits]
    return columns + [(split, "overall") for split in sorted(splits - {"val", "test"})]


def column_title(split: str, group: str) -> str:
    return split if group == "overall" and split != "test" else f"{split} {group}"


def table1(results: dict[str, dict[str, dict]], with_ci: bool = True) -> tuple[list[str], list[list[str]]]:
    """The paper's Table 1 layout: one row per method; cells are "gIoU / cIoU" (×100) for val and test
    short / long / overall, with the two CIs on a second line when asked.

    `results` maps method → split → results document. Columns of splits nobody scored are left out.
    """
    columns = table1_columns(results)
    header = ["method"] + [column_title(split, group) for split, group in columns]
    rows = []
    for method, by_split in results.items():
        row = [method]
        for split, group in columns:
            cell = by_split.get(split, {}).get("groups", {}).get(group)
            text = f"{format_metric(cell, 'giou', False)} / {format_metric(cell, 'ciou', False)}"
            if with_ci and cell and cell.get("giou_ci"):
                text += "\n" + " ".join(f"[{100 * cell[m][0]:.1f}, {100 * cell[m][1]:.1f}]" if cell.get(m) else "-"
                                        for m in ("giou_ci", "ciou_ci"))
            row.append(text)
        rows.append(row)
    return header, rows


def split_table(document: dict, with_ci: bool = True) -> tuple[list[str], list[list[str]]]:
    """One split's groups as rows: group, n, gIoU, cIoU."""
    header = ["group", "n", "gIoU", "cIoU"]
    rows = [[name, str(row["n"]), format_metric(row, "giou", with_ci), format_metric(row, "ciou", with_ci)]
            for name, row in document["groups"].items()]
    return header, rows
