"""Typed errors. The library raises these; the CLI turns them into one line and exit code 2."""
from __future__ import annotations

from .text import MAX_PATH, display_line, display_text, plain_text_problem, quoted


class ReasonSegError(Exception):
    """A user-facing error: the message names the file, the sample and the field, and says what to do."""

    def __init__(self, message: str, *, path: str | None = None, sample_id: str | None = None,
                 field: str | None = None, hint: str | None = None):
        self.message = message
        self.path = path
        self.sample_id = sample_id
        self.field = field
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = [part for part in (
            display_text(self.path, MAX_PATH) if self.path else None,
            f"sample {quoted(self.sample_id)}" if self.sample_id is not None else None,
            f"field {quoted(self.field)}" if self.field is not None else None,
        ) if part]
        text = (": ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f" ({self.hint})"
        # One line, whatever the inputs held: escaped (no terminal escapes, no bidi overrides) and capped.
        return display_line(text)


class DatasetError(ReasonSegError):
    """A release folder or one of its files is missing or malformed."""


class SubmissionError(ReasonSegError):
    """A predictions file (JSON RLE, PNG folder or zip) is invalid."""


class ReadLimitError(SubmissionError):
    """Reading an untrusted predictions file needed more memory or time than its limits allow (reasonseg.sandbox)."""


class MaskError(ReasonSegError):
    """A mask or RLE is malformed."""


class ResultsError(ReasonSegError):
    """A results file is invalid or two results cannot be compared."""


class BuildError(ReasonSegError):
    """A dataset builder cannot proceed with its inputs."""


class MethodError(ReasonSegError):
    """A baseline method is unknown or cannot run (missing weights, bad options)."""


class LeaderboardError(ReasonSegError):
    """A leaderboard request, database or server cannot proceed."""


class MissingExtraError(ReasonSegError):
    """A command needs an optional part of the package (an extra) that is not installed."""


class OutputError(ReasonSegError):
    """An output folder cannot be written: not empty without --overwrite, or not a folder."""


def check_plain_text(value: str, what: str, *, path: str | None = None, field: str | None = None,
                     error: type[ReasonSegError] | None = None) -> str:
    """`value` when it holds no control or format character and no lone surrogate (`text.plain_text_problem`);
    else `error` (a ReasonSegError class, SubmissionError by default) naming the first one."""
    problem = plain_text_problem(value, what)
    if problem is None:
        return value
    raise (error or SubmissionError)(problem, path=path, field=field,
                                     hint="write it as plain text, without control, format or invisible characters")
