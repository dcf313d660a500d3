"""Runs through the real `openai` client against the stand-in server on 127.0.0.1, with injected faults."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings

import pytest
from rephrase_support import FULL, LONG, SHORT, config, make_release, many_samples, texts_of

from reasonseg.builders.rephrase import MAX_TEXTS, RephraseError, ResponseCache, normalize, run_rephrase
from reasonseg.builders.rephrase.standin import Fault, StandInServer
from reasonseg.dataset import load_split, read_manifest, sha256_file, validate_release


@pytest.fixture
def server():
    with StandInServer() as s:
        yield s


def ledger(cache_path):
    with sqlite3.connect(cache_path) as db:
        return db.execute("SELECT item, attempt, outcome, request_id, prompt_tokens, completion_tokens, cost_usd, "
                          "latency_s FROM calls ORDER BY id").fetchall()


def test_happy_path_rewrites_texts_records_manifest_and_traces_to_cache(tmp_path, server):
    root = make_release(tmp_path / "rel")
    before = {p.name: p.read_bytes() for p in (root / "val").iterdir()}
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=3))
    assert (report.status, report.items, report.ok, report.skipped["full"]) == ("complete", 2, 2, 1)
    texts = texts_of(root)
    assert texts["s1"][0] == "the red circle" and texts["s2"][0] == LONG["text"][0]
    assert texts["s3"] == FULL["text"]  # already five texts: untouched, no call
    assert len(texts["s1"]) == 4 and len(texts["s2"]) == 4 and report.texts_added == 6
    for sid in ("s1", "s2"):
        assert len({normalize(t) for t in texts[sid]}) == len(texts[sid])
    assert all(len(t.split()) <= 8 and not t.endswith("?") for t in texts["s1"])  # a phrase stays a phrase
    assert all(len(t.split()) >= 4 for t in texts["s2"])  # a sentence stays a sentence
    doc = json.loads((root / "train" / "s2.json").read_text(encoding="utf-8"))
    assert doc["flags"] == {"kept": 1} and doc["shapes"] == LONG["shapes"]  # other keys kept
    # Each added text names the cache entry it came from, and that entry holds it.
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        for text, key in doc["rephrase_sources"].items():
            assert text in cache.get(key).outputs and text in doc["text"][1:]
    assert len(server.log) == 2
    body = server.log[0].body
    assert body["response_format"] == {"type": "json_object"} and body["model"] == "gpt-3.5-turbo"
    assert body["seed"] == 0 and body["temperature"] == 0.7
    manifest = read_manifest(root)
    record = manifest["rephrase"][-1]
    assert record["model"] == "gpt-3.5-turbo" and record["prompt_version"].startswith("rephrase-v1+")
    assert record["totals"]["calls"] == 2 and record["totals"]["texts_added"] == 6 and record["date"]
    assert record["totals"]["cost_usd"] > 0 and record["status"] == "complete"
    assert manifest["name"] == "test-release" and manifest["splits"]["train"]["count"] == 3
    assert manifest["files"]["train/s1.json"] == sha256_file(root / "train" / "s1.json")
    assert validate_release(root).ok
    assert {p.name: p.read_bytes() for p in (root / "val").iterdir()} == before
    rows = ledger(tmp_path / "c.sqlite")
    assert [r[2] for r in rows] == ["ok", "ok"] and all(r[3].startswith("req_standin_") for r in rows)
    assert all(r[4] > 0 and r[5] > 0 and r[6] > 0 and r[7] >= 0 for r in rows)
    assert sum(r[6] for r in rows) == pytest.approx(report.cost_usd)


def test_rerun_is_answered_from_the_cache_without_any_request(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT, "s2": LONG})
    copy = make_release(tmp_path / "copy", {"s1": SHORT, "s2": LONG})
    run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    first = texts_of(root)
    manifest_bytes = (root / "manifest.json").read_bytes()
    again = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    assert len(server.log) == 2 and again.attempts == 0 and again.cached == 2 and again.texts_added == 0
    assert texts_of(root) == first and (root / "manifest.json").read_bytes() == manifest_bytes
    # Another copy of the same release: the same replies come from the cache.
    other = run_rephrase(copy, config(server, tmp_path / "c.sqlite", n=2))
    assert len(server.log) == 2 and other.cached == 2 and texts_of(copy) == first


def test_release_without_manifest_gets_one_and_cp1252_is_rewritten_as_utf8(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT}, manifest=False)
    path = root / "train" / "s1.json"
    doc = dict(SHORT, text=["the naïve circle"])
    path.write_bytes(json.dumps(doc, ensure_ascii=False).encode("cp1252"))
    run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    data = json.loads(path.read_bytes().decode("utf-8"))
    assert data["text"][0] == "the naïve circle" and len(data["text"]) == 3
    manifest = read_manifest(root)
    assert manifest["rephrase"][0]["totals"]["texts_added"] == 2
    assert manifest["files"]["train/s1.json"] == sha256_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [s.encoding for s in load_split(root, "train")] == ["utf-8"]


@pytest.mark.parametrize("fault", [
    Fault("429", times=2, retry_after="0.3"), Fault("500", times=2), Fault("503"), Fault("bad_body"),
    Fault("drop"), Fault("slow", delay_s=2.0),
])
def test_transport_faults_are_retried_and_logged(tmp_path, server, fault):
    root = make_release(tmp_path / "rel", {"s1": SHORT})
    times = fault.times  # the server counts it down
    server.add_fault(fault)
    started = time.perf_counter()
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, timeout_s=0.5))
    elapsed = time.perf_counter() - started
    assert report.ok == 1 and report.failed == 0 and len(texts_of(root)["s1"]) == 3
    outcomes = [r[2] for r in ledger(tmp_path / "c.sqlite")]
    expected = {"429": "http_429", "500": "http_500", "503": "http_503", "bad_body": "bad_body",
                "drop": "connection", "slow": "timeout"}[fault.kind]
    assert outcomes == [expected] * times + ["ok"]
    assert report.attempts == times + 1 and report.retries == times
    assert len(server.log) == times + 1
    if fault.kind == "429":
        # Retry-After is honoured: each retry waits at least 0.3 s, far above the 0.01 s backoff.
        gaps = [b.at - a.at for a, b in zip(server.log, server.log[1:], strict=False)]
        assert min(gaps) >= 0.3 and elapsed >= 0.6


@pytest.mark.parametrize("kind", ["bad_content", "empty", "length"])
def test_unusable_content_is_asked_again_with_a_new_seed(tmp_path, server, kind):
    root = make_release(tmp_path / "rel", {"s1": SHORT})
    server.add_fault(Fault(kind, times=1))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    assert report.ok == 1 and report.attempts == 2 and len(texts_of(root)["s1"]) == 3
    assert [r[2] for r in ledger(tmp_path / "c.sqlite")] == ["check_failed", "ok"]
    assert [e.body["seed"] for e in server.log] == [0, 1]


def test_persistently_bad_replies_are_rejected_with_reason_and_not_asked_again(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT, "s2": LONG})
    server.add_fault(Fault("content", times=99, match="red circle",
                           content=json.dumps({"rephrasings": ["The red circle."]})))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, check_retries=2))
    assert report.rejected == 1 and report.ok == 1
    assert ("train/s1", "rejected: no usable rephrasing: repeats the input") in report.problems
    assert texts_of(root)["s1"] == ["the red circle"]
    assert len(server.requests_for("the red circle")) == 3  # the first try and two check retries
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        status, reason, dropped = db.execute(
            "SELECT status, reason, dropped_json FROM responses WHERE input_text='the red circle'").fetchone()
    assert status == "rejected" and "repeats the input" in reason and "The red circle." in dropped
    again = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    assert again.rejected == 1 and again.attempts == 0 and len(server.requests_for("the red circle")) == 3
    # --retry-rejected asks again, and a good reply replaces the rejection.
    server.faults.clear()
    third = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, retry_rejected=True))
    assert third.ok == 2 and third.attempts == 1 and len(texts_of(root)["s1"]) == 3
    # The new round goes on from the seeds already paid for: no failed request is sent again unchanged.
    assert [e.body["seed"] for e in server.requests_for("the red circle")] == [0, 1, 2, 3]


def test_a_schema_1_cache_is_upgraded_in_place_and_keeps_its_replies(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT})
    cache = tmp_path / "c.sqlite"
    run_rephrase(root, config(server, cache, n=2))
    with sqlite3.connect(cache) as db:  # back to what reasonseg wrote before replies were kept in the ledger
        db.execute("ALTER TABLE calls DROP COLUMN content")
        db.execute("ALTER TABLE calls DROP COLUMN finish_reason")
        db.execute("DROP TABLE writes")
        db.execute("UPDATE meta SET value='1' WHERE name='schema'")
    copy = make_release(tmp_path / "copy", {"s1": SHORT})
    again = run_rephrase(copy, config(server, cache, n=2))
    assert again.cached == 1 and len(server.log) == 1 and texts_of(copy) == texts_of(root)
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT value FROM meta WHERE name='schema'").fetchone() == ("2",)
        assert db.execute("SELECT COUNT(*) FROM writes").fetchone() == (1,)
    assert validate_release(copy).ok


def test_long_query_rephrasing_that_names_the_hidden_class_is_rejected(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s2": LONG}, classes={"train/s2": ["ball"]})
    server.add_fault(Fault("content", times=1, content=json.dumps({"rephrasings": [
        "Find the ball that would roll across the table.", "Which item in this photo would roll off a table?"]})))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    assert report.ok == 1
    assert texts_of(root)["s2"] == [LONG["text"][0], "Which item in this photo would roll off a table?"]
    prompt = server.log[0].body["messages"][1]["content"]
    assert "never use the words 'ball'" in prompt


def test_exhausted_retries_fail_the_item_without_caching_it(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT, "s2": LONG})
    server.add_fault(Fault("500", times=4, match="red circle"))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))
    assert report.failed == 1 and report.ok == 1 and report.status == "complete"
    assert report.problems[0][0] == "train/s1" and "http_500 after 4 attempts" in report.problems[0][1]
    assert texts_of(root)["s1"] == ["the red circle"]
    again = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2))  # a failure is tried again later
    assert again.ok == 2 and again.attempts == 1 and len(texts_of(root)["s1"]) == 3


def test_refused_request_fails_the_item_and_bad_key_stops_the_run(tmp_path):
    root = make_release(tmp_path / "rel", many_samples(6))
    with StandInServer(api_key="right", faults=[Fault("400", match="number 1")]) as server:
        report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, api_key="right"))
        assert report.failed == 1 and report.ok == 5 and "http_400" in report.problems[0][1]
        root2 = make_release(tmp_path / "rel2", many_samples(6))
        with pytest.raises(RephraseError, match="refused the API key"):
            run_rephrase(root2, config(server, tmp_path / "c2.sqlite", n=2, api_key="wrong"))
    assert read_manifest(root2)["rephrase"][-1]["status"] == "failed"


def test_budget_stops_before_a_call_would_pass_it(tmp_path, server, monkeypatch):
    root = make_release(tmp_path / "rel", many_samples(10))
    prices = tmp_path / "prices.json"
    # $1 per 1000 tokens: one call costs about $0.3 worst case and $0.2 in fact.
    prices.write_text(json.dumps({"models": {"pricey": {"input_per_1m": 1000, "output_per_1m": 1000}}}))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, model="pricey", prices=prices,
                                       budget_usd=1.0, concurrency=1))
    assert report.status == "budget" and 1 <= report.ok < 10 and report.not_done == 10 - report.ok
    assert report.cost_usd <= 1.0 and len(server.log) == report.ok
    assert read_manifest(root)["rephrase"][-1]["status"] == "budget"
    with pytest.raises(RephraseError, match="no price is known"):
        run_rephrase(root, config(server, tmp_path / "c.sqlite", model="local-llm", budget_usd=1.0))


def test_dry_run_counts_without_calls_key_or_writes(tmp_path, server):
    root = make_release(tmp_path / "rel")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", api_key=None, dry_run=True))
    assert report.status == "dry-run" and report.to_call == 2 and report.cached == 0
    assert report.prompt_tokens > 100 and report.completion_tokens > 10
    assert report.cost_usd == pytest.approx((report.prompt_tokens * 0.5 + report.completion_tokens * 1.5) / 1e6)
    assert not server.log and not (tmp_path / "c.sqlite").exists()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    run_rephrase(root, config(server, tmp_path / "c.sqlite"))
    root2 = make_release(tmp_path / "rel2")
    assert run_rephrase(root2, config(server, tmp_path / "c.sqlite", dry_run=True)).cached == 2


def test_eval_splits_are_refused_unless_allowed_and_key_is_required(tmp_path, server):
    root = make_release(tmp_path / "rel")
    for split in ("val", "train_val", "test"):
        with pytest.raises(RephraseError, match="refusing to rephrase the (val|test) split"):
            run_rephrase(root, config(server, tmp_path / "c.sqlite", split=split))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", split="val", allow_eval_splits=True, n=1))
    assert report.ok == 1 and len(texts_of(root, "val")["v1"]) == 2
    with pytest.raises(RephraseError, match="OPENAI_API_KEY is not set"):
        run_rephrase(root, config(server, tmp_path / "c.sqlite", api_key=None))
    with pytest.raises(RephraseError, match="--n must be between 1 and 4"):
        run_rephrase(root, config(server, tmp_path / "c.sqlite", n=5))


def test_concurrency_keeps_several_requests_in_flight(tmp_path):
    root = make_release(tmp_path / "rel", many_samples(16))
    with StandInServer(latency_s=0.2) as server:
        started = time.perf_counter()
        report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, concurrency=8))
        elapsed = time.perf_counter() - started
    assert report.ok == 16 and elapsed < 16 * 0.2 * 0.75  # serial would take 3.2 s
    arrivals = sorted(e.at for e in server.log)
    # Several requests were sent before the first reply could have come back (margins for a loaded machine).
    assert sum(a - arrivals[0] < 0.2 for a in arrivals) >= 4


def test_stop_event_finishes_in_flight_calls_and_writes_them(tmp_path):
    root = make_release(tmp_path / "rel", many_samples(20))
    stop = threading.Event()
    with StandInServer(latency_s=0.3) as server:
        timer = threading.Timer(0.45, stop.set)
        timer.start()
        report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=2, concurrency=2), stop=stop)
        timer.join()
    assert report.status == "interrupted" and 2 <= report.ok < 20 and report.not_done == 20 - report.ok
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        finished = [k for k in cache.calls() if k["outcome"] == "ok"]
    assert len(finished) == report.ok == len(server.log)  # every call sent was completed and kept
    written = sum(len(t) > 1 for t in texts_of(root).values())
    assert written == report.ok
    assert read_manifest(root)["rephrase"][-1]["status"] == "interrupted" and validate_release(root).ok


def test_explain_task_writes_explanatory_entries(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT, "s2": LONG, "s3": FULL}, classes={"train/s2": ["ball"]})
    (root / "explanatory").mkdir()
    existing = [{"image": "s1.jpg", "query": "the red circle", "outputs": "It is red and round."}]
    (root / "explanatory" / "train.json").write_text(json.dumps(existing))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", task="explain"))
    assert report.ok == 2 and report.skipped["explained"] == 1 and report.texts_added == 2
    entries = json.loads((root / "explanatory" / "train.json").read_text(encoding="utf-8"))
    assert entries[0] == existing[0]
    by_image = {e["image"]: e for e in entries[1:]}
    assert set(by_image) == {"s2.jpg", "s3.jpg"}
    assert by_image["s2.jpg"]["query"] == LONG["text"][0] and "ball" in by_image["s2.jpg"]["outputs"]
    assert "Target: ball" in server.requests_for(LONG["text"][0])[0].body["messages"][1]["content"]
    assert all(set(e) >= {"image", "query", "outputs"} for e in entries)
    manifest = read_manifest(root)
    assert manifest["files"]["explanatory/train.json"] == sha256_file(root / "explanatory" / "train.json")
    assert manifest["rephrase"][-1]["task"] == "explain"
    again = run_rephrase(root, config(server, tmp_path / "c.sqlite", task="explain"))
    assert again.items == 0 and len(server.log) == 2
    with pytest.raises(RephraseError, match="--split train only"):
        run_rephrase(root, config(server, tmp_path / "c.sqlite", task="explain", split="val",
                                  allow_eval_splits=True))


def test_at_most_five_texts_in_all(tmp_path, server):
    four = {"text": ["the red circle", "red circle", "circle in red", "the red disc"], "is_sentence": False,
            "shapes": []}
    root = make_release(tmp_path / "rel", {"s4": four})
    run_rephrase(root, config(server, tmp_path / "c.sqlite", n=4))
    texts = texts_of(root)["s4"]
    assert len(texts) == MAX_TEXTS and texts[:4] == four["text"]


def test_custom_prompt_is_versioned_in_keys_and_manifest(tmp_path, server):
    root = make_release(tmp_path / "rel", {"s1": SHORT, "s2": LONG})
    prompt = tmp_path / "my-prompt.txt"
    prompt.write_text("# version: terse-2\n[system]\nRewrite, answer in JSON.\n[user]\n${form} ${target_rule}\n"
                      "Instruction: ${text}\nNumber of rephrasings: ${n}\n", encoding="utf-8")
    run_rephrase(root, config(server, tmp_path / "c.sqlite", n=1))
    report = run_rephrase(root, config(server, tmp_path / "c.sqlite", n=1, prompt=prompt, limit=1))
    assert report.prompt_version.startswith("terse-2+") and report.samples == 1
    assert report.attempts == 1 and len(server.log) == 3  # a new prompt is a new key: asked again
    assert server.log[-1].body["messages"][0]["content"] == "Rewrite, answer in JSON."
    record = read_manifest(root)["rephrase"][-1]
    assert record["prompt_version"] == report.prompt_version and record["prompt"] == str(prompt)


def test_demo_step_dry_runs_then_rephrases_a_copy_through_the_stand_in(tmp_path):
    from reasonseg.builders.rephrase.demo import demo_step
    from reasonseg.dataset import write_manifest
    from reasonseg.sample import write_sample_release

    release = write_sample_release(tmp_path / "release", counts={"train": 6, "val": 2})
    write_manifest(release, name="reasonseg-sample", version="1")
    original = texts_of(release)
    result = demo_step(tmp_path / "demo", release)
    assert texts_of(release) == original  # the source release is not touched
    assert result["dry_run"]["calls"] == result["rephrased"]["calls"] == result["rephrased"]["items"] > 0
    assert result["dry_run"]["estimated_cost_usd"] > 0 and "offline stand-in" in result["server"]
    assert result["rephrased"]["texts_added"] > 0 and result["rerun"]["calls"] == 0
    assert result["server_requests"] == result["rephrased"]["calls"]
    copy = tmp_path / "demo" / "release-rephrased"
    assert validate_release(copy).ok and read_manifest(copy)["rephrase"][-1]["status"] == "complete"
