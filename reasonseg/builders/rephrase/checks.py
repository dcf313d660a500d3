"""Validation of model outputs: pure functions from the reply text to accepted texts or a reason for rejection.

A reply is rejected as a whole when it does not parse or holds nothing usable (the caller retries it); single
rephrasings that break a rule are dropped with their reason, and the reply keeps the others.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

MAX_TEXT_CHARS = 400
MAX_EXPLANATION_CHARS = 800
MIN_SENTENCE_WORDS = 4
MAX_REPLY_CHARS = 65536  # far above any honest reply (max_tokens is at most 1024): checked before parsing
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_NON_WORD = re.compile(r"[\W_]+")  # punctuation, symbols and spacing, in any script


def normalize(text: str) -> str:
    """The form two texts are compared in: case, spacing and punctuation do not count."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


def words(text: str) -> list[str]:
    return normalize(text).split()


def names_class(text: str, classes: tuple[str, ...]) -> str | None:
    """The first class name the text mentions as a whole word (a plural 's'/'es' counts), else None."""
    padded = f" {normalize(text)} "
    for name in classes:
        target = normalize(name)
        if target and re.search(rf" {re.escape(target)}(e?s)? ", padded):
            return name
    return None


@dataclass(frozen=True)
class Rejection:
    text: str
    reason: str


@dataclass(frozen=True)
class CheckResult:
    """`accepted` are the usable outputs; `error` says why the whole reply failed (then `accepted` is empty)."""

    accepted: tuple[str, ...] = ()
    dropped: tuple[Rejection, ...] = field(default=())
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_json_object(content: str | None) -> tuple[dict | None, str | None]:
    """The reply's JSON object, tolerating a Markdown code fence around it (some local servers add one)."""
    if content is None or not content.strip():
        return None, "empty reply"
    if len(content) > MAX_REPLY_CHARS:
        return None, f"reply too long ({len(content)} > {MAX_REPLY_CHARS} characters)"
    fenced = _FENCE.match(content)
    body = fenced.group(1) if fenced else content
    try:
        data = json.loads(body)
    except RecursionError:
        return None, "reply is JSON nested too deeply"
    except ValueError:  # not JSON, or a number of over 4300 digits
        return None, "reply is not valid JSON"
    if not isinstance(data, dict):
        return None, "reply is JSON but not an object"
    return data, None


def check_rephrasings(content: str | None, original: str, *, is_sentence: bool, n: int,
                      classes: tuple[str, ...] = (), finish_reason: str | None = None) -> CheckResult:
    """Accept up to `n` rephrasings of `original` that keep its form and do not repeat it or each other."""
    if finish_reason == "length":
        return CheckResult(error="reply was cut off at the token limit (too long)")
    data, error = parse_json_object(content)
    if error:
        return CheckResult(error=error)
    items = data.get("rephrasings")
    if not isinstance(items, list):
        return CheckResult(error="reply has no 'rephrasings' list")
    if not items:
        return CheckResult(error="'rephrasings' is empty")
    original_words = words(original)
    # A long query that does not name its target must not be given the answer by its rephrasing.
    hidden = classes if is_sentence and not names_class(original, classes) else ()
    max_chars = min(MAX_TEXT_CHARS, max(80, int(2.5 * len(original)) + 40))
    max_phrase_words = max(8, 2 * len(original_words))
    seen = {normalize(original)}
    accepted: list[str] = []
    dropped: list[Rejection] = []
    for item in items:
        if not isinstance(item, str):
            dropped.append(Rejection(json.dumps(item)[:80], "not a string"))
            continue
        text = " ".join(item.split())
        reason = None
        if not text or not normalize(text):
            reason = "empty"
        elif len(text) > max_chars:
            reason = f"too long ({len(text)} > {max_chars} characters)"
        elif normalize(text) == normalize(original):
            reason = "repeats the input"
        elif normalize(text) in seen:
            reason = "duplicate"
        elif not is_sentence and (len(words(text)) > max_phrase_words or text.endswith("?")):
            reason = "not a short noun phrase (the input is a short phrase)"
        elif is_sentence and len(words(text)) < MIN_SENTENCE_WORDS:
            reason = "not a sentence (the input is a long query)"
        elif hidden and (named := names_class(text, hidden)):
            reason = f"names the target class {named!r} that the input leaves implicit"
        if reason:
            dropped.append(Rejection(text, reason))
            continue
        seen.add(normalize(text))
        accepted.append(text)
    if not accepted:
        reasons = sorted({r.reason for r in dropped})
        return CheckResult(dropped=tuple(dropped), error="no usable rephrasing: " + "; ".join(reasons))
    return CheckResult(tuple(accepted[:n]), tuple(dropped))


def check_explanation(content: str | None, query: str, *, finish_reason: str | None = None) -> CheckResult:
    """Accept one explanation: a non-empty string, not too long, that is not the instruction again."""
    if finish_reason == "length":
        return CheckResult(error="reply was cut off at the token limit (too long)")
    data, error = parse_json_object(content)
    if error:
        return CheckResult(error=error)
    text = data.get("explanation")
    if not isinstance(text, str):
        return CheckResult(error="reply has no 'explanation' string")
    text = " ".join(text.split())
    if not normalize(text):
        return CheckResult(error="'explanation' is empty")
    if len(text) > MAX_EXPLANATION_CHARS:
        return CheckResult(error=f"explanation too long ({len(text)} > {MAX_EXPLANATION_CHARS} characters)")
    if normalize(text) == normalize(query):
        return CheckResult(error="explanation repeats the input")
    if len(words(text)) < 3:
        return CheckResult(error="explanation is under three words")
    return CheckResult((text,))
