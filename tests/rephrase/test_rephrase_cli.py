"""The `reasonseg rephrase` command as a user runs it: a subprocess against the stand-in server, killed and rerun."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from rephrase_support import cli_command, cli_env, make_release, many_samples, run_cli, texts_of

from reasonseg.builders.rephrase import normalize
from reasonseg.builders.rephrase.standin import Fault, StandInServer
from reasonseg.dataset import read_manifest, validate_release


def test_val_is_refused_and_a_missing_key_is_one_clear_line(tmp_path):
    root = make_release(tmp_path / "rel")
    refused = run_cli(str(root), "--split", "val", "--cache", str(tmp_path / "c.sqlite"), OPENAI_API_KEY="k")
    assert refused.returncode == 2 and "refusing to rephrase the val split" in refused.stderr
    assert "--allow-eval-splits" in refused.stderr and "Traceback" not in refused.stderr
    no_key = run_cli(str(root), "--cache", str(tmp_path / "c.sqlite"))
    assert no_key.returncode == 2 and no_key.stderr.count("\n") == 1
    assert no_key.stderr.startswith("error: OPENAI_API_KEY is not set")
    dry = run_cli(str(root), "--dry-run", "--cache", str(tmp_path / "c.sqlite"), "--n", "3")
    assert dry.returncode == 0 and "calls to make" in dry.stdout and "nothing was sent" in dry.stdout
    assert not (tmp_path / "c.sqlite").exists()


def test_cli_run_with_base_url_and_json_report(tmp_path):
    root = make_release(tmp_path / "rel")
    with StandInServer(api_key="sk-test", faults=[Fault("429", retry_after="0.2")]) as server:
        done = run_cli(str(root), "--base-url", server.url, "--cache", str(tmp_path / "c.sqlite"), "--n", "2",
                       "--json", "--backoff", "0.01", OPENAI_API_KEY="sk-test")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "complete" and report["ok"] == 2 and report["retries"] == 1
    assert len(texts_of(root)["s1"]) == 3 and validate_release(root).ok


def _start(root, server, cache, *extra):
    return subprocess.Popen(cli_command(str(root), "--base-url", server.url, "--cache", str(cache), "--n", "2",
                                        *extra), env=cli_env(OPENAI_API_KEY="k"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_requests(server, count, process, limit=60.0):
    deadline = time.monotonic() + limit
    while len(server.log) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the CLI sent too few requests"
        time.sleep(0.02)


def test_kill_9_then_rerun_gives_each_text_once_and_repeats_no_completed_call(tmp_path):
    samples = many_samples(40)
    root = make_release(tmp_path / "rel", samples)
    reference = make_release(tmp_path / "reference", samples)
    cache = tmp_path / "c.sqlite"
    with StandInServer(latency_s=0.05) as server:
        process = _start(root, server, cache, "--concurrency", "3")
        _wait_for_requests(server, 12, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        first_run = len(server.log)
        assert first_run < 40  # killed in the middle
        with sqlite3.connect(cache) as db:
            completed = {row[0] for row in db.execute("SELECT input_text FROM responses WHERE status='ok'")}
            lost = db.execute("SELECT COUNT(*) FROM calls WHERE outcome='in_flight'").fetchone()[0]
        assert 8 <= len(completed) <= first_run
        rerun = _start(root, server, cache, "--concurrency", "3")
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        asked_again = [e.text for e in server.log[first_run:] if e.text in completed]
        assert asked_again == []  # no completed item was requested twice
        assert len(server.log) - first_run == 40 - len(completed)
        with sqlite3.connect(cache) as db:
            assert db.execute("SELECT COUNT(*) FROM calls WHERE outcome='lost'").fetchone()[0] == lost
        # The same texts as one uninterrupted run, each exactly once, original first.
        clean = subprocess.run(cli_command(str(reference), "--base-url", server.url, "--cache",
                                           str(tmp_path / "fresh.sqlite"), "--n", "2"),
                               env=cli_env(OPENAI_API_KEY="k"), capture_output=True, text=True, timeout=120)
        assert clean.returncode == 0, clean.stderr
    texts, expected = texts_of(root), texts_of(reference)
    assert texts == expected
    for sid, sample_texts in texts.items():
        assert sample_texts[0] == samples[sid]["text"][0] and len(sample_texts) == 3
        assert len({normalize(t) for t in sample_texts}) == 3
    assert not list(root.rglob(".*.tmp"))
    assert validate_release(root).ok  # checksums in the manifest match the rewritten files
    records = read_manifest(root)["rephrase"]
    # The killed run could not record itself: the rerun recorded it from the ledger, then itself.
    assert [r["status"] for r in records] == ["killed", "complete"]
    assert records[0]["run_id"] != records[1]["run_id"] and records[0]["totals"]["files_written"] > 0


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery to a child process")
def test_ctrl_c_finishes_in_flight_calls_writes_them_and_exits_130(tmp_path):
    root = make_release(tmp_path / "rel", many_samples(30))
    cache = tmp_path / "c.sqlite"
    with StandInServer(latency_s=0.3) as server:
        process = _start(root, server, cache, "--concurrency", "2")
        _wait_for_requests(server, 3, process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        sent = len(server.log)
    assert process.returncode == 130, err
    assert "stopping: finishing the calls in flight" in err and "Traceback" not in err
    with sqlite3.connect(cache) as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM calls")]
        done = {row[0] for row in db.execute("SELECT input_text FROM responses")}
    assert outcomes == ["ok"] * sent and len(done) == sent  # nothing left in flight, nothing lost
    texts = texts_of(root)
    assert {sid for sid, t in texts.items() if len(t) == 3} == {
        sid for sid, t in texts.items() if t[0] in done}
    assert read_manifest(root)["rephrase"][-1]["status"] == "interrupted" and validate_release(root).ok


def test_repeated_kills_at_random_moments_leave_every_file_whole(tmp_path):
    import random

    samples = many_samples(60)
    root = make_release(tmp_path / "rel", samples)
    reference = make_release(tmp_path / "reference", samples)
    cache = tmp_path / "c.sqlite"
    rng = random.Random(5)
    checkpoints = []  # (server log length at the kill, texts answered in the cache by then)
    with StandInServer(latency_s=0.01) as server:
        for _ in range(3):
            before = len(server.log)
            process = _start(root, server, cache, "--concurrency", "4")
            _wait_for_requests(server, before + rng.randint(3, 12), process)
            time.sleep(rng.uniform(0, 0.05))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            # Every file is either the old or the new version: each still parses, manifest included.
            for path in list((root / "train").glob("*.json")) + [root / "manifest.json"]:
                json.loads(path.read_text(encoding="utf-8"))
            with sqlite3.connect(cache) as db:
                answered = {row[0] for row in db.execute("SELECT input_text FROM responses")}
            checkpoints.append((len(server.log), answered))
        final = run_cli(str(root), "--base-url", server.url, "--cache", str(cache), "--n", "2",
                        OPENAI_API_KEY="k")
        assert final.returncode == 0, final.stderr
        for at, answered in checkpoints:
            assert not [e.text for e in server.log[at:] if e.text in answered]  # never asked again
        assert run_cli(str(reference), "--base-url", server.url, "--cache", str(tmp_path / "fresh.sqlite"),
                       "--n", "2", OPENAI_API_KEY="k").returncode == 0
    assert texts_of(root) == texts_of(reference)
    assert validate_release(root).ok and not list(root.rglob(".*.tmp"))
