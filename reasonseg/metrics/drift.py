"""The drift table: one predictions file scored under every scorer's rules, side by side with `lisa`.

The document (`reasonseg-drift`, version 1) holds one row per profile of `rules.PROFILES`:
{"rules", "giou", "ciou" (null where that scorer computes none), "n_queries_counted", "giou_minus_lisa",
"ciou_minus_lisa"} as fractions like a results file, or {"rules", "error"} where those rules refuse the file (a
missing prediction under rules that have no rule for one). The rows are `scoring.drift_rows` (the scorer builds them
too, for a results document's "drift"); this module gives them their document, reads it back and prints it.
"""
from __future__ import annotations

import os

from ..errors import ReasonSegError
from ..submission import PredictionSet
from .groundtruth import GroundTruth
from .scoring import DRIFT_REFERENCE, dataset_of, drift_rows, read_inputs

FORMAT, VERSION = "reasonseg-drift", 1
REFERENCE = DRIFT_REFERENCE


def drift_document(gt: GroundTruth, preds: PredictionSet, method: str | None = None) -> dict:
    from .. import __version__

    return {"format": FORMAT, "version": VERSION, "split": gt.split, "method": method or preds.method,
            "reference": REFERENCE, "rows": drift_rows(gt, preds), "dataset": dataset_of(gt),
            "predictions_sha256": preds.sha256, "reasonseg_version": __version__}


def evaluate_drift(data_root: str | os.PathLike, predictions: str | os.PathLike, split: str | None, *,
                   method: str | None = None, **read_options) -> dict:
    """Read a split and a predictions file and score them under every profile (`reasonseg score --rules all`)."""
    gt, preds = read_inputs(data_root, predictions, split, **read_options)
    return drift_document(gt, preds, method)


def is_drift(document: dict) -> bool:
    return isinstance(document, dict) and document.get("format") == FORMAT


def check_drift(document: dict, where: str) -> dict:
    if document.get("version") != VERSION or not isinstance(document.get("rows"), list):
        raise ReasonSegError(f"not a {FORMAT} version {VERSION} document", path=where, field="version")
    return document


def drift_table(document: dict) -> tuple[list[str], list[list[str]]]:
    """The rows as printed (×100, one more decimal than Table 1: drifts are often below a tenth of a point)."""
    header = ["rules", "gIoU", "cIoU", "queries counted", f"ΔgIoU vs {REFERENCE}", f"ΔcIoU vs {REFERENCE}"]
    rows = []
    for row in document["rows"]:
        if "error" in row:
            rows.append([row["rules"], "refused", "-", "-", "-", "-"])
            continue
        rows.append([row["rules"], _points(row["giou"]), _points(row["ciou"]), str(row["n_queries_counted"]),
                     _points(row.get(f"giou_minus_{REFERENCE}"), signed=True),
                     _points(row.get(f"ciou_minus_{REFERENCE}"), signed=True)])
    return header, rows


def refusals(document: dict) -> list[str]:
    """One line per profile that refused the predictions, saying why."""
    return [f"{row['rules']}: {row['error']}" for row in document["rows"] if "error" in row]


def _points(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"
