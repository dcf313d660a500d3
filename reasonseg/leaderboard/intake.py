"""What a submission must hold before it is stored: its form fields, its metadata and a predictions file that the
Foundation's validator accepts and that matches the split's queries (ids, sizes, split name).

These are pure checks; each problem is one `IntakeError` line that the API returns as `{"error": ...}` with status
400. The form's fields are checked in the server; `read_upload` and `check_against`, which parse the uploaded bytes,
run only in a sandboxed child process (`reasonseg.sandbox`), and `precheck_upload` is a cheap early refusal.
"""
from __future__ import annotations

import os
import re
from typing import BinaryIO

from ..errors import ReasonSegError, check_plain_text
from ..metrics.groundtruth import GroundTruth
from ..metrics.scoring import match_predictions
from ..submission import Limits, PredictionSet, SplitIndex, parse_predictions_bytes, precheck_stream

CHECKPOINT_CHOICES = ("val", "test", "last", "other")
_TEXT_LIMITS = {"model_size": 40, "base_model": 200, "training_data": 1000, "prompt_mode": 200, "notes": 1000}
_BOOL_FIELDS = ("trained_on_val", "oracle")
_URL_FIELDS = ("paper_url", "code_url")
META_FIELDS = tuple(_TEXT_LIMITS) + _BOOL_FIELDS + ("checkpoint_selected_on",) + _URL_FIELDS
FORM_FIELDS = ("split", "method", "file") + META_FIELDS
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_URL = re.compile(r"^https?://[^\s<>\"'`]+$", re.IGNORECASE)
_LINE_BREAKS = re.compile(r"[\t\n\r]")
MAX_METHOD_CHARS = 100


class IntakeError(ReasonSegError):
    """A submission's fields or file are not acceptable (HTTP 400)."""


def _text(name: str, value: str, limit: int, what: str = "text") -> str:
    # Free text (notes) may break lines; a name may not. Neither may hold escapes, bidi or invisible characters.
    value = value.strip()
    check_plain_text(value if what != "text" else _LINE_BREAKS.sub(" ", value), what, field=name, error=IntakeError)
    if len(value) > limit:
        raise IntakeError(f"is {len(value)} characters long; at most {limit} are allowed", field=name)
    return value


def parse_bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise IntakeError(f"must be true or false, got {value[:40]!r}", field=name)


def check_fields(fields: dict[str, str], splits: tuple[str, ...]) -> tuple[str, str, dict]:
    """(split, method, metadata) from the form's text fields; unknown fields are refused, not ignored."""
    unknown = sorted(set(fields) - set(FORM_FIELDS))
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        raise IntakeError(f"unknown field(s) {shown}; allowed: {', '.join(FORM_FIELDS)}")
    split = fields.get("split", "").strip()
    if split not in splits:
        raise IntakeError(f"must be one of {', '.join(splits)}, got {split[:20]!r}", field="split")
    method = _text("method", fields.get("method", ""), MAX_METHOD_CHARS, "method name")
    if not method:
        raise IntakeError("is required: the name of the method on the leaderboard", field="method")
    meta: dict[str, object] = {}
    for name, limit in _TEXT_LIMITS.items():
        if fields.get(name, "").strip():
            meta[name] = _text(name, fields[name], limit)
    for name in _BOOL_FIELDS:
        if fields.get(name, "").strip():
            meta[name] = parse_bool(name, fields[name])
    choice = fields.get("checkpoint_selected_on", "").strip().lower()
    if choice:
        if choice not in CHECKPOINT_CHOICES:
            raise IntakeError(f"must be one of {', '.join(CHECKPOINT_CHOICES)}, got {choice[:20]!r}",
                              field="checkpoint_selected_on")
        meta["checkpoint_selected_on"] = choice
    for name in _URL_FIELDS:
        value = fields.get(name, "").strip()
        if value:
            if len(value) > 500 or not _URL.match(value):
                raise IntakeError("must be an http:// or https:// address", field=name)
            meta[name] = value
    return split, method, meta


def safe_filename(name: str | None) -> str:
    base = os.path.basename((name or "").replace("\\", "/"))
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base)[:200].lstrip(".")
    return base or "predictions"


def precheck_upload(fh: BinaryIO, filename: str, index: SplitIndex) -> None:
    """The split's bounds on an upload still on disk, read in chunks (`submission.precheck_stream`)."""
    try:
        precheck_stream(fh, filename, index)
    except ReasonSegError as exc:
        raise IntakeError(exc.message, path=exc.path, hint=exc.hint) from None


def read_upload(data: bytes, filename: str, limits: Limits, index: SplitIndex | None = None) -> PredictionSet:
    """Validate uploaded bytes in memory with the Foundation's reader; errors name the uploaded file."""
    try:
        return parse_predictions_bytes(data, filename, limits, index)
    except ReasonSegError as exc:
        raise IntakeError(exc.message, path=exc.path, sample_id=exc.sample_id, field=exc.field,
                          hint=_server_hint(exc.hint)) from None


def _server_hint(hint: str | None) -> str | None:
    # The scorer's hints name CLI options; on the server the same advice is about the form's fields.
    if not hint:
        return None
    hint = hint.replace("pass --split ", "submit with split=")
    return hint.replace(", or pass --missing empty to score them as empty masks", "")


def check_against(gt: GroundTruth, preds: PredictionSet, protocol: str = "lisa") -> None:
    """Every query of the split has a mask of the right size, and nothing else is there (ids, text indices)."""
    try:
        match_predictions(gt, preds, protocol)
    except ReasonSegError as exc:
        raise IntakeError(exc.message, path=exc.path, sample_id=exc.sample_id, field=exc.field,
                          hint=_server_hint(exc.hint)) from None
