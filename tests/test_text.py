"""reasonseg.text: what is shown of user text holds no control, format or surrogate character, is bounded, and is the
text itself when there is nothing to hide; check_plain_text refuses exactly those characters."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reasonseg.errors import SubmissionError, check_plain_text
from reasonseg.text import MAX_SHOWN, display_text, unsafe_char

HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@given(st.text(st.characters(codec=None), max_size=600))
def test_shown_text_hides_nothing_and_is_bounded(value):
    shown = display_text(value)
    assert not any(unicodedata.category(c) in HIDDEN for c in shown)
    assert len(shown) <= MAX_SHOWN + 10 + len(f"... ({len(value)} characters)")
    if len(value) <= MAX_SHOWN and not any(unicodedata.category(c) in HIDDEN for c in value):
        assert shown == value


@given(st.text(st.characters(codec=None), max_size=200))
def test_plain_text_check_refuses_exactly_controls_formats_and_surrogates(value):
    bad = [n for n, c in enumerate(value) if unicodedata.category(c) in ("Cc", "Cf", "Cs")]
    assert (unsafe_char(value) or (None,))[0] == (bad[0] if bad else None)


ESCAPED = [("a\x1b[2Jb", "a\\x1b[2Jb"), ("LISA \u202eab", "LISA \\u202eab"), ("\ud800x", "\\ud800x"),
           ("t\tn\n", "t\\tn\\n"), ("\U000e0041", "\\U000e0041"), ("naïve 日本", "naïve 日本")]


@pytest.mark.parametrize("value, shown", ESCAPED)
def test_escapes(value, shown):
    assert display_text(value) == shown


def test_long_values_are_cut_with_their_length():
    assert display_text("x" * 10_000) == "x" * MAX_SHOWN + "... (10000 characters)"
    assert display_text("x" * 10_000, None) == "x" * 10_000


def test_refusal_names_the_character_and_its_position():
    with pytest.raises(SubmissionError, match=r"U\+202E RIGHT-TO-LEFT OVERRIDE, at character 6") as info:
        check_plain_text("LISA \u202eab", "method name", path="p.json", field="method")
    assert "\u202e" not in str(info.value) and "\\u202e" in str(info.value)
