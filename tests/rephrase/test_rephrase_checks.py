"""Pure parts of the rephrase stage: output checks, merging, prompt templates, prices, retry timing, cache keys."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from reasonseg.builders.rephrase.apply import merge_texts
from reasonseg.builders.rephrase.cache import cache_key
from reasonseg.builders.rephrase.checks import check_explanation, check_rephrasings, names_class, normalize
from reasonseg.builders.rephrase.client import RetryPolicy, parse_retry_after
from reasonseg.builders.rephrase.plan import form_rules
from reasonseg.builders.rephrase.pricing import load_prices
from reasonseg.builders.rephrase.prompts import load_template, parse_template
from reasonseg.errors import BuildError


def reply(*texts) -> str:
    return json.dumps({"rephrasings": list(texts)})


def test_normalize_ignores_case_spacing_and_punctuation():
    assert normalize("  The RED, circle! ") == normalize("the red circle") == "the red circle"
    assert normalize("naïve  question?") == "naïve question"
    assert normalize("the red circle") != normalize("the red circles")


def test_short_phrase_rephrasings_stay_short_and_new():
    result = check_rephrasings(reply("the crimson circle", "THE red circle.", "Can you find the red circle?",
                                     "the crimson  circle", "a round red shape in the middle of the picture on the "
                                     "left side"), "the red circle", is_sentence=False, n=4)
    assert result.ok
    assert result.accepted == ("the crimson circle",)
    reasons = {r.text: r.reason for r in result.dropped}
    assert reasons["THE red circle."] == "repeats the input"
    assert "short noun phrase" in reasons["Can you find the red circle?"]
    assert reasons["the crimson circle"] == "duplicate"
    assert any("short noun phrase" in r or "too long" in r for r in reasons.values())


def test_long_query_rephrasings_must_be_sentences_and_not_name_the_hidden_target():
    original = "What would keep you dry in the rain?"
    result = check_rephrasings(reply("an umbrella", "Which object here would protect you from the rain?",
                                     "Find the umbrella that keeps the rain off.",
                                     "Point out the umbrellas in this picture, please."),
                               original, is_sentence=True, n=4, classes=("umbrella",))
    assert result.accepted == ("Which object here would protect you from the rain?",)
    reasons = [r.reason for r in result.dropped]
    assert "not a sentence (the input is a long query)" in reasons
    assert sum("names the target class 'umbrella'" in r for r in reasons) == 2


def test_class_may_be_named_when_the_input_names_it():
    result = check_rephrasings(reply("Please find the umbrella that keeps the rain off."),
                               "Find the umbrella in this picture.", is_sentence=True, n=4, classes=("umbrella",))
    assert result.accepted == ("Please find the umbrella that keeps the rain off.",)


@pytest.mark.parametrize("content,reason", [
    (None, "empty reply"), ("", "empty reply"), ("   ", "empty reply"),
    ("Sure! here they are: 1. a 2. b", "not valid JSON"), ("[1, 2]", "not an object"),
    ('{"rephrasings": "the blue one"}', "no 'rephrasings' list"), ('{"rephrasings": []}', "is empty"),
    ('{"rephrasings": ["the red circle", "  "]}', "no usable rephrasing"),
])
def test_unusable_replies_are_rejected_with_a_reason(content, reason):
    result = check_rephrasings(content, "the red circle", is_sentence=False, n=4)
    assert not result.ok and reason in result.error and result.accepted == ()


def test_code_fence_is_tolerated_and_n_caps_the_accepted():
    fenced = "```json\n" + reply("the scarlet circle", "the crimson circle", "the ruby circle") + "\n```"
    assert check_rephrasings(fenced, "the red circle", is_sentence=False, n=2).accepted == (
        "the scarlet circle", "the crimson circle")


def test_truncated_reply_is_rejected_as_too_long():
    result = check_rephrasings(reply("the scarlet circle"), "the red circle", is_sentence=False, n=2,
                               finish_reason="length")
    assert not result.ok and "too long" in result.error


def test_too_long_single_text_is_dropped():
    result = check_rephrasings(reply("x " * 300 + "end.", "Which round thing here would roll away?"),
                               "What would roll across the table?", is_sentence=True, n=4)
    assert result.accepted == ("Which round thing here would roll away?",)
    assert result.dropped[0].reason.startswith("too long")


def test_explanation_checks():
    query = "What would keep you dry in the rain?"
    ok = check_explanation(json.dumps({"explanation": "An umbrella sheds rain  water."}), query)
    assert ok.ok and ok.accepted == ("An umbrella sheds rain water.",)
    for content, reason in [(json.dumps({"explanation": query.upper()}), "repeats the input"),
                            (json.dumps({"explanation": ""}), "empty"), ("nope", "not valid JSON"),
                            (json.dumps({"explanation": "x" * 900}), "too long"),
                            (json.dumps({"text": "hi there friend"}), "no 'explanation'")]:
        result = check_explanation(content, query)
        assert not result.ok and reason in result.error


def test_names_class_matches_whole_words_and_plurals():
    assert names_class("Two Umbrellas here", ("umbrella",)) == "umbrella"
    assert names_class("the bus stop", ("bus",)) == "bus"
    assert names_class("a busy street", ("bus",)) is None
    assert names_class("the fire hydrant", ("fire hydrant",)) == "fire hydrant"


def test_merge_keeps_originals_first_drops_duplicates_and_caps_at_five():
    merged, added, duplicates = merge_texts(["The red circle", "red circle"],
                                            ["the red circle!", "the crimson circle", "a scarlet circle",
                                             "the ruby circle", "the cherry circle"])
    assert merged == ["The red circle", "red circle", "the crimson circle", "a scarlet circle", "the ruby circle"]
    assert added == merged[2:] and duplicates == 1
    assert merge_texts(merged, ["the crimson circle"]) == (merged, [], 0)  # already full: nothing more


def test_form_rules_hide_the_class_only_when_the_query_does():
    form, rule = form_rules("What keeps you dry?", True, ("umbrella",))
    assert "sentence" in form and "'umbrella'" in rule
    _, rule = form_rules("Find the umbrella.", True, ("umbrella",))
    assert "'umbrella'" not in rule
    form, _ = form_rules("the red circle", False, ())
    assert "noun phrase" in form


def test_shipped_templates_render_and_have_versions():
    rephrase = load_template("rephrase")
    assert rephrase.version == "rephrase-v1" and rephrase.identity.startswith("rephrase-v1+")
    messages = rephrase.render(text="the red circle", n=3, form="F", target_rule="R")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Instruction: the red circle" in messages[1]["content"] and '{"rephrasings"' in messages[1]["content"]
    explain = load_template("explain")
    assert '{"explanation"' in explain.render(text="q", target="t")[1]["content"]


def test_custom_template_errors_and_identity(tmp_path):
    with pytest.raises(BuildError, match=r"\[system\] line then a \[user\]"):
        parse_template("no sections here", "p.txt")
    template = parse_template("[system]\nS ${oops}\n[user]\nU ${text}\n", "p.txt")
    assert template.version == "custom"
    with pytest.raises(BuildError, match="placeholder"):
        template.render(text="x")
    other = parse_template("[system]\nS\n[user]\nU ${text} changed\n", "p.txt")
    assert other.identity != template.identity  # edited text -> new cache keys


def test_prices_lookup_and_override(tmp_path):
    prices = load_prices()
    assert prices.lookup("gpt-3.5-turbo").input_per_1m == 0.5
    assert prices.lookup("gpt-3.5-turbo-0125") == prices.lookup("gpt-3.5-turbo")
    assert prices.lookup("gpt-4o-2024-08-06") == prices.lookup("gpt-4o")
    assert prices.lookup("gpt-4.5") is None and prices.lookup("llama3") is None
    assert prices.lookup("gpt-3.5-turbo").cost(1_000_000, 1_000_000) == pytest.approx(2.0)
    override = tmp_path / "p.json"
    override.write_text(json.dumps({"models": {"llama3": {"input_per_1m": 0.1, "output_per_1m": 0.2}}}))
    assert load_prices(override).lookup("llama3").output_per_1m == 0.2
    override.write_text(json.dumps({"models": {"llama3": {"input_per_1m": "cheap"}}}))
    with pytest.raises(BuildError, match="numeric"):
        load_prices(override)


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": later}) <= 31
    policy, rng = RetryPolicy(base_s=1.0, cap_s=8.0), random.Random(0)
    delays = [policy.delay(k, None, rng) for k in range(1, 7)]
    assert all(0.5 * min(8, 2 ** (k - 1)) <= d <= min(8, 2 ** (k - 1)) for k, d in enumerate(delays, 1))
    assert 3.0 <= policy.delay(1, 3.0, rng) <= 3.3  # Retry-After wins over a shorter backoff


def test_cache_key_changes_with_every_input():
    base = dict(task="rephrase", model="m", prompt_version="v1+abc", temperature=0.7, seed=0, n=4, text="t",
                messages=[{"role": "user", "content": "t"}])
    key = cache_key(**base)
    for name, value in [("model", "m2"), ("prompt_version", "v2+abc"), ("temperature", 0.8), ("seed", 1),
                        ("n", 3), ("text", "u"), ("task", "explain")]:
        assert cache_key(**(base | {name: value})) != key, name
    assert cache_key(**base) == key
