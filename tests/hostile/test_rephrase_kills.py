"""`reasonseg rephrase` killed with SIGKILL at precise points of a run (against the stand-in OpenAI-compatible
server on 127.0.0.1), then rerun as documented: the rerun repairs the manifest (checksums and a record of the
killed run), never pays again for a reply it already has, and ends with the texts of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_release

from reasonseg.builders.rephrase.standin import Fault, StandInServer
from reasonseg.dataset import read_manifest, validate_release, write_manifest

REPO = Path(__file__).resolve().parents[2]
KILLER = Path(__file__).with_name("rephrase_kill.py")
RED = "the red circle"
SAMPLES = {
    "s1": {"text": [RED], "is_sentence": False, "shapes": [{"label": "target", "points": [[1, 1], [20, 1], [9, 20]]}]},
    "s2": {"text": ["What could you roll across the table in this picture?"], "is_sentence": True, "shapes": []},
    # Three texts: two more make it full, so later runs skip it (its checksum must still be repaired).
    "s3": {"text": ["a blue square", "blue square", "square in blue"], "is_sentence": False, "shapes": []},
}
REPEAT = json.dumps({"rephrasings": ["The red circle."]})  # fails the checks: it repeats the input


def _release(root: Path) -> Path:
    write_release(root, "train", SAMPLES, {sid: (32, 48) for sid in SAMPLES})
    write_manifest(root, name="kill-test", version="1")
    return root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return env | {"PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), "OPENAI_API_KEY": "k"}


def _command(root, server, cache, kill=(), extra=()) -> list[str]:
    args = [str(root), "--base-url", server.url, "--cache", str(cache), "--n", "2", "--backoff", "0.01",
            "--concurrency", "1", *extra]
    if kill:
        return [sys.executable, str(KILLER), *kill, "--", *args]
    return [sys.executable, "-m", "reasonseg.cli", "rephrase", *args]


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args, **kwargs), env=_env(), capture_output=True, text=True, timeout=120,
                          cwd=REPO)


def _texts(root: Path) -> dict[str, list[str]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))["text"] for p in sorted((root / "train").glob("*.json"))}


def _ledger(cache: Path, text: str) -> list[tuple[str, str]]:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT c.outcome, c.detail FROM calls c JOIN (SELECT DISTINCT key, input_text FROM "
                          "responses) r ON r.key = c.key WHERE r.input_text=? ORDER BY c.id", (text,)).fetchall()


def _stored_and_in_flight(cache: Path) -> tuple[set[str], int]:
    """The texts whose reply the cache holds, and how many calls a killed run left in flight."""
    with sqlite3.connect(cache) as db:
        stored = {row[0] for row in db.execute("SELECT input_text FROM responses")}
        (in_flight,) = db.execute("SELECT COUNT(*) FROM calls WHERE outcome='in_flight'").fetchone()
    return stored, in_flight


def _outcomes(cache: Path) -> list[str]:
    with sqlite3.connect(cache) as db:
        return [row[0] for row in db.execute("SELECT outcome FROM calls ORDER BY id")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[str]]:
    """The texts one run without a kill (or a fault) gives."""
    folder = tmp_path_factory.mktemp("reference")
    reference = _release(folder / "rel")
    with StandInServer() as server:
        done = _run(reference, server, folder / "c.sqlite")
    assert done.returncode == 0, done.stderr
    return _texts(reference)


# (name, stand-in faults, kill spec, extra CLI options, requests for RED once all is done, manifest statuses)
KILL_POINTS = [
    ("a paid reply failed the checks, before its retry",
     [Fault("bad_content", times=1, match=RED)],
     ("reasonseg.builders.rephrase.cache:ResponseCache.call_finished", "after", "1", "check_failed"), (),
     2, ["complete"]),
    ("the retries were spent on failing replies, before the rejection was cached",
     [Fault("content", times=99, match=RED, content=REPEAT)],
     ("reasonseg.builders.rephrase.cache:ResponseCache.call_finished", "after", "2", "check_failed"),
     ("--check-retries", "1"), 2, ["complete"]),
    ("an accepted reply was in the ledger, not yet in the cache",
     [], ("reasonseg.builders.rephrase.cache:ResponseCache.put", "before", "1"), (), 1, ["complete"]),
    ("the reply was cached, the sample file not yet rewritten",
     [], ("reasonseg.builders.rephrase.run:add_rephrasings", "before", "1"), (), 1, ["complete"]),
    ("a rewrite was journaled, its rename not yet done",
     [], ("reasonseg.builders.rephrase.apply:atomic_write_text", "before", "2"), (), 1, ["killed", "complete"]),
    ("every file was rewritten (one now full), the manifest not yet updated",
     [], ("reasonseg.builders.rephrase.run:update_manifest", "before", "1"), (), 1, ["killed", "complete"]),
    ("the manifest was updated, the run not yet marked finished",
     [], ("reasonseg.builders.rephrase.run:update_manifest", "after", "1"), (), 1, ["complete"]),
]


@pytest.mark.parametrize("case", KILL_POINTS, ids=[c[0] for c in KILL_POINTS])
def test_kill_9_at_a_precise_point_then_the_documented_rerun(tmp_path, case, uninterrupted):
    _, faults, kill, extra, red_requests, statuses = case
    root = _release(tmp_path / "rel")
    cache = tmp_path / "c.sqlite"
    with StandInServer(faults=[Fault(**vars(f)) for f in faults]) as server:
        killed = _run(root, server, cache, kill=kill, extra=extra)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        for path in list((root / "train").glob("*.json")) + [root / "manifest.json"]:
            json.loads(path.read_text(encoding="utf-8"))  # every file whole, old or new
        before = [(e.text, e.body.get("seed")) for e in server.log]
        stored, in_flight = _stored_and_in_flight(cache)
        rerun = _run(root, server, cache, extra=extra)
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
        after = [(e.text, e.body.get("seed")) for e in server.log][len(before):]
        # Nothing the killed run stored is asked again. A text it asked but never stored may be asked again only
        # when its call was cut off in flight (the next item is sent while a result is written); a failed reply's
        # retry uses a new seed.
        asked_again = [t for t, _ in after if t != RED and t in {b for b, _ in before}]
        assert not set(asked_again) & stored, after
        assert len(asked_again) <= in_flight, (asked_again, in_flight)
        red = [s for t, s in before + after if t == RED]
        assert len(red) == red_requests and len(set(red)) == len(red), red
    texts, expected = _texts(root), dict(uninterrupted)
    if "--check-retries" in extra:  # rejected: the sample keeps its original text, the others are as usual
        assert texts.pop("s1") == [RED] and expected.pop("s1") != [RED]
    assert texts == expected and len(texts["s3"]) == 5
    assert validate_release(root).ok  # every checksum repaired, the full file included
    records = read_manifest(root)["rephrase"]
    assert [r["status"] for r in records] == statuses
    assert len({r["run_id"] for r in records}) == len(records)
    assert "in_flight" not in _outcomes(cache)


def test_kill_9_while_a_call_is_in_flight(tmp_path, uninterrupted):
    root = _release(tmp_path / "rel")
    cache = tmp_path / "c.sqlite"
    with StandInServer(faults=[Fault("hold", match=RED, delay_s=60)]) as server:
        process = subprocess.Popen(_command(root, server, cache), env=_env(), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not server.requests_for(RED):  # the server holds the call: the kill hits it in flight
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        server.release()
        assert _outcomes(cache) == ["in_flight"]
        rerun = _run(root, server, cache)
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
        # The lost reply never arrived: asking again is the only way to get it, and the ledger says so.
        assert len(server.requests_for(RED)) == 2
        outcomes = _outcomes(cache)
        assert outcomes[0] == "lost" and "in_flight" not in outcomes
    assert _texts(root) == uninterrupted and validate_release(root).ok
    assert [r["status"] for r in read_manifest(root)["rephrase"]] == ["complete"]
