"""Hostile or shared replies through `reasonseg rephrase` (a subprocess against the stand-in server): a malformed
reply is one failed attempt in the ledger, never a traceback or a call left `in_flight`; samples that share a
request send it once and share the reply."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from helpers import write_release
from measured_cli import run_measured

from reasonseg.builders.rephrase.standin import Fault, StandInServer
from reasonseg.dataset import read_manifest, validate_release, write_manifest

RED = "the red circle"
OTHER = {"text": ["What could you roll across the table in this picture?"], "is_sentence": True, "shapes": []}
NESTED = "[" * 30_000 + "]" * 30_000  # far past the parser's depth, under the length limit


def _release(root: Path, samples: dict[str, dict]) -> Path:
    write_release(root, "train", samples, {sid: (32, 48) for sid in samples})
    write_manifest(root, name="replies-test", version="1")
    return root


def _rephrase(root: Path, server, cache: Path, *extra: str):
    return run_measured("rephrase", str(root), "--base-url", server.url, "--cache", str(cache), "--n", "2",
                        "--backoff", "0.01", "--timeout", "10", *extra, OPENAI_API_KEY="k")


def _calls(cache: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT outcome, detail FROM calls ORDER BY id").fetchall()


def _texts(root: Path) -> dict[str, list[str]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))["text"] for p in sorted((root / "train").glob("*.json"))}


def test_samples_sharing_a_request_send_it_once_and_share_the_cached_reply(tmp_path):
    short = {"text": [RED], "is_sentence": False, "shapes": []}
    # c has the same text as a long query: another form, so another request.
    samples = {"a": short, "b": dict(short, flags={"b": 1}), "c": dict(short, is_sentence=True), "d": OTHER}
    root = _release(tmp_path / "rel", samples)
    cache = tmp_path / "c.sqlite"
    with StandInServer() as server:
        done = _rephrase(root, server, cache, "--json")
        assert done.returncode == 0, done.stderr
        forms = [e.body["messages"][1]["content"] for e in server.requests_for(RED)]
    assert sum("short noun phrase" in f for f in forms) == 1  # a and b: one request
    assert sum("short noun phrase" not in f for f in forms) >= 1  # c: its own
    report = json.loads(done.stdout)
    assert report["ok"] + report["rejected"] == 4 and report["ok"] >= 3
    texts = _texts(root)
    assert texts["a"] == texts["b"] and len(texts["a"]) == 3
    with sqlite3.connect(cache) as db:
        rows = dict(db.execute("SELECT key, outputs_json FROM responses").fetchall())
    for sid in ("a", "b", "d"):  # c's sentence-form replies fail the stand-in's phrase rules
        sources = json.loads((root / "train" / f"{sid}.json").read_text(encoding="utf-8"))["rephrase_sources"]
        assert set(sources) == set(texts[sid][1:])
        for text, key in sources.items():
            assert text in json.loads(rows[key])  # the row named holds the text
    assert validate_release(root).ok


def _one_sample_run(tmp_path, faults: list[Fault], *extra: str):
    root = _release(tmp_path / "rel", {"s1": {"text": [RED], "is_sentence": False, "shapes": []}})
    cache = tmp_path / "c.sqlite"
    with StandInServer(faults=faults) as server:
        result = _rephrase(root, server, cache, *extra)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.seconds < 60 and result.peak_rss_mb < 700, (result.seconds, result.peak_rss_mb)
    calls = _calls(cache)
    assert "in_flight" not in [outcome for outcome, _ in calls]
    return root, cache, result, calls


def test_deeply_nested_reply_content_is_a_failed_attempt_then_retried(tmp_path):
    root, _, result, calls = _one_sample_run(tmp_path, [Fault("content", times=1, match=RED, content=NESTED)])
    assert result.returncode == 0, result.stderr
    assert calls == [("check_failed", "reply is JSON nested too deeply"), ("ok", None)]
    assert len(_texts(root)["s1"]) == 3 and validate_release(root).ok


def test_deeply_nested_http_body_is_a_failed_attempt_then_retried(tmp_path):
    body = '{"id": "x", "object": "chat.completion", "choices": ' + NESTED + "}"
    root, _, result, calls = _one_sample_run(tmp_path, [Fault("raw_body", times=1, match=RED, content=body)])
    assert result.returncode == 0, result.stderr
    assert [outcome for outcome, _ in calls] == ["bad_body", "ok"]
    assert len(_texts(root)["s1"]) == 3


def test_huge_reply_is_refused_before_parsing_and_kept_bounded_in_the_ledger(tmp_path):
    huge = json.dumps({"rephrasings": ["x" * 2_000_000]})
    root, cache, result, calls = _one_sample_run(tmp_path, [Fault("content", times=1, match=RED, content=huge)])
    assert result.returncode == 0 and calls[0][0] == "check_failed" and "reply too long" in calls[0][1]
    with sqlite3.connect(cache) as db:
        stored = db.execute("SELECT MAX(LENGTH(content)) FROM calls").fetchone()[0]
    assert stored <= 65537


def test_only_hostile_replies_reject_the_item_with_its_reason_and_the_run_completes(tmp_path):
    root, _, result, calls = _one_sample_run(tmp_path, [Fault("content", times=99, match=RED, content=NESTED)],
                                             "--check-retries", "2")
    assert result.returncode == 0, result.stderr
    assert [outcome for outcome, _ in calls] == ["check_failed"] * 3
    assert "train/s1: rejected: reply is JSON nested too deeply" in result.stdout
    assert _texts(root)["s1"] == [RED] and validate_release(root).ok
    assert read_manifest(root)["rephrase"][-1]["totals"]["rejected"] == 1
    assert os.path.getsize(root / "train" / "s1.json") > 0
