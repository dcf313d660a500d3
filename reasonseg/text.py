"""User text made safe to show, and refused where it could lie.

Ids, method and team names, file names and the error lines that quote them reach terminals, logs and JSON error
bodies. A terminal obeys escape sequences (ESC, OSC, C1) and a page obeys bidi overrides, so shown text has every
control and format character written as an escape (`\\x1b`, `\\u202e`, a lone surrogate as `\\udxxx`), and is cut,
with its full length said, so that an 8 MiB value is never echoed whole. Ids and method names are refused outright
when they hold such characters: `plain_text_problem` says why, `errors.check_plain_text` raises it.
"""
from __future__ import annotations

import unicodedata

MAX_SHOWN = 200     # characters of one user value (an id, a name) shown
MAX_PATH = 500      # characters of a path shown at the head of an error (folders can be deep)
MAX_LINE = 2000     # characters of one message line (an error, an audit entry) shown
_ESCAPED = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))   # shown as escapes: controls, formats, surrogates, line breaks
_REFUSED = {"Cc": "a control character", "Cf": "a format character (bidi, zero-width, BOM)",
            "Cs": "a lone surrogate"}
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def display_text(value: object, limit: int | None = MAX_SHOWN, keep: str = "") -> str:
    """`value` as text safe for a terminal or a log: control, format and surrogate characters (but those in `keep`)
    escaped, and cut to about `limit` characters followed by the full length ('... (N characters)')."""
    text = value if isinstance(value, str) else str(value)
    limit = len(text) * 10 + 1 if limit is None else limit     # None: never cut (an escape is at most 10 wide)
    if len(text) <= limit and text.isprintable():      # the common case; isprintable is False for every escaped one
        return text
    shown: list[str] = []
    width = 0
    for char in text:
        if width >= limit:
            return "".join(shown) + f"... ({len(text)} characters)"
        piece = _escape(char) if (not char.isprintable() and char not in keep
                                  and unicodedata.category(char) in _ESCAPED) else char
        shown.append(piece)
        width += len(piece)
    return "".join(shown)


def display_line(text: object) -> str:
    """One message line (an error, an audit entry) as shown: whitespace runs as one space, escaped, capped."""
    return display_text(" ".join(str(text).split()), MAX_LINE)


def quoted(value: object) -> str:
    """A user value inside a message: quoted and shown safely (`display_text`)."""
    return f"'{display_text(value)}'"


def unsafe_char(value: str) -> tuple[int, str] | None:
    """(position, character) of the first control or format character or lone surrogate in `value`, or None."""
    if value.isprintable():
        return None
    for n, char in enumerate(value):
        if not char.isprintable() and unicodedata.category(char) in _REFUSED:
            return n, char
    return None


def plain_text_problem(value: str, what: str) -> str | None:
    """Why `value` (an id, a method or team name: `what`) cannot be taken as plain text: the first control or format
    character (categories Cc, Cf: ESC, C1, bidi overrides and isolates, zero-width characters, BOM) or lone
    surrogate it holds, named with its position; None when it holds none. `errors.check_plain_text` raises it."""
    found = unsafe_char(value)
    if found is None:
        return None
    n, char = found
    name = unicodedata.name(char, "")
    kind = _REFUSED[unicodedata.category(char)]
    return (f"{what} {quoted(value)} holds {kind}, U+{ord(char):04X}{f' {name}' if name else ''}, at character "
            f"{n + 1}")


__all__ = ["MAX_LINE", "MAX_PATH", "MAX_SHOWN", "display_line", "display_text", "plain_text_problem", "quoted",
           "unsafe_char"]
