"""Hostile uploads against a real `reasonseg leaderboard serve` process on 127.0.0.1 (issue 15, points 1, 2, 5, 7-9).

Each resource attack asserts time and the server's peak memory (VmHWM from /proc) with generous margins: before the
fix these cost tens of seconds and 1.2-1.6 GB; after it they are refused from headers and counts in well under both.
"""
from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
from leaderboard.lb_helpers import ServerProcess, cli, get_json, post_submission, zip_bytes
from upload_helpers import (
    header_only_png,
    many_predictions,
    nested_json,
    peak_rss_bytes,
    predictions_doc,
    reset_peak_rss,
    team,
    zero_png,
)

from reasonseg.leaderboard.db import Database
from reasonseg.masks import encode_rle
from reasonseg.sample import write_sample_release
from reasonseg.submission import png_name

MIB = 1024 * 1024
SECONDS = 30            # every hostile upload is answered well within this (the review measured 20-40 s)
MEMORY = 300 * MIB      # peak server memory growth allowed for one hostile upload (the review measured 1.2-1.6 GB)


def honest(samples, split: str, full: str | None = None) -> bytes:
    """Empty masks for every query of `split` (a whole-image mask for sample `full`)."""
    entries = []
    for s in samples[split]:
        mask = np.full((s.height, s.width), 1 if s.id == full else 0, np.uint8)
        entries.append({"id": s.id, "text_index": 0, "mask": encode_rle(mask)})
    return predictions_doc(entries, split)


@pytest.fixture(scope="module")
def server(release, tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile-server")
    db = str(work / "lb.db")
    old = os.umask(0o022)     # what a default shell gives: the files must still come out private
    try:
        srv = ServerProcess(release, db, work, "--daily-limit", "100", "--refused-limit", "1000",
                            "--bootstrap", "50")
    finally:
        os.umask(old)
    srv.db, srv.work = db, work
    yield srv
    srv.stop()


def refused(code: int, body: dict, *needles: str, status: int = 400) -> str:
    assert code == status, (code, body)
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for needle in needles:
        assert needle in body["error"], (needle, body["error"])
    return body["error"]


def attack(server, token: str, data: bytes, filename: str, split: str = "val") -> tuple[int, dict, float, int]:
    """POST one hostile upload; (status, body, seconds, growth of the server's peak memory in bytes)."""
    pid = server.proc.pid
    reset_peak_rss(pid)
    before = peak_rss_bytes(pid)
    start = time.monotonic()
    code, body = post_submission(server.url, token, {"split": split, "method": "hostile"}, filename, data,
                                 timeout=120)
    return code, body, time.monotonic() - start, peak_rss_bytes(pid) - before


# ------------------------------------------------------------------------------------------ resource attacks

def test_png_bomb_zip_is_refused_from_its_headers(server, samples):
    """Four 8192x8192 16-bit RGBA PNGs (512 MiB each once decoded) in a small zip: refused before any decoding,
    whether they carry the split's ids (wrong size) or not (unknown ids)."""
    token = team(server.db, "png bombers")
    bomb = zero_png(8192, 8192, bit_depth=16, colour_type=6)
    ids = [s.id for s in samples["val"][:4]]
    for names, needle in ((ids, "mask size 8192x8192"), ([f"x{i}" for i in range(4)], "not in split 'val'")):
        data = zip_bytes({png_name(name, 0): bomb for name in names})
        code, body, seconds, growth = attack(server, token, data, "bomb.zip")
        refused(code, body, needle)
        assert seconds < SECONDS and growth < MEMORY, (seconds, growth / MIB)


def test_a_million_predictions_are_refused_before_they_are_parsed(server):
    token = team(server.db, "json floods")
    data = many_predictions(1_000_000)     # 56 MB: the review's 10^6-entry file
    code, body, seconds, growth = attack(server, token, data, "flood.json")
    refused(code, body, "JSON objects", "at most 59 predictions")
    assert seconds < SECONDS and growth < MEMORY, (seconds, growth / MIB)


def test_a_zip_with_a_huge_directory_is_refused_before_it_is_opened(server):
    token = team(server.db, "zip directories")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for n in range(20_000):
            archive.writestr(f"a{n}.png", b"")
    code, body, seconds, growth = attack(server, token, buf.getvalue(), "many.zip")
    refused(code, body, "zip lists 20000 entries")
    assert seconds < SECONDS and growth < MEMORY


# ------------------------------------------------------------------------------- one-line JSON refusals

def test_deeply_nested_json_is_a_json_400(server):
    token = team(server.db, "nesters")
    code, body, seconds, growth = attack(server, token, nested_json(200_000), "deep.json")
    refused(code, body, "nested too deeply")
    assert seconds < SECONDS and growth < MEMORY


def test_rle_counts_over_2_63_are_a_json_400(server, samples):
    token = team(server.db, "big counts")
    s = samples["val"][0]
    doc = predictions_doc([{"id": s.id, "text_index": 0,
                            "mask": {"size": [s.height, s.width], "counts": [0, 2**63, 5]}}])
    code, body = post_submission(server.url, token, {"split": "val", "method": "m"}, "counts.json", doc)
    refused(code, body, "malformed RLE", "oversized run", s.id)


def test_png_header_over_179_megapixels_is_a_json_400(server, samples):
    token = team(server.db, "huge headers")
    s = samples["val"][0]
    data = zip_bytes({png_name(s.id, 0): header_only_png(20_000, 10_000)})   # 200 Mpx claimed, PIL's bomb limit
    code, body = post_submission(server.url, token, {"split": "val", "method": "m"}, "huge.zip", data)
    refused(code, body, "20000x10000", "pixel limit")


def test_ids_over_2_63_are_not_found_or_refused(server, samples):
    for path in (f"/api/submissions/{2**64}", f"/api/submissions/{2**63}", "/api/submissions/-5"):
        code, body = get_json(server.url + path)
        refused(code, body, "no submission", status=404)
    with pytest.raises(urllib.error.HTTPError) as page:
        urllib.request.urlopen(f"{server.url}/submissions/{2**64}", timeout=30)
    assert page.value.code == 404
    token = team(server.db, "huge ids")
    s = samples["val"][0]
    doc = predictions_doc([{"id": s.id, "text_index": 2**64, "mask": encode_rle(np.zeros((s.height, s.width)))}])
    code, body = post_submission(server.url, token, {"split": "val", "method": "m"}, "ids.json", doc)
    refused(code, body, f"text_index {2**64}")


def test_requests_that_are_not_uploads_get_json_errors(server):
    token = team(server.db, "odd requests")
    request = urllib.request.Request(server.url + "/api/submissions", data=b"x", method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as wrong_type:
        urllib.request.urlopen(request, timeout=30)
    refused(wrong_type.value.code, json.loads(wrong_type.value.read()), "multipart", status=415)
    broken = urllib.request.Request(server.url + "/api/submissions", data=b"--b\r\nnot a part", method="POST",
                                    headers={"Authorization": f"Bearer {token}",
                                             "Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as malformed:
        urllib.request.urlopen(broken, timeout=30)
    assert 400 <= malformed.value.code < 500
    assert set(json.loads(malformed.value.read())) == {"error"}


# ----------------------------------------------------------------------------------- slots and refusals

def test_refused_uploads_count_against_their_own_limit(release, samples, tmp_path):
    db = str(tmp_path / "refusals.db")
    noisy, quiet = team(db, "noisy"), team(db, "quiet")
    server = ServerProcess(release, db, tmp_path, "--daily-limit", "2", "--refused-limit", "3", "--bootstrap", "20")
    try:
        for _ in range(3):
            code, body = post_submission(server.url, noisy, {"split": "val", "method": "m"}, "bad.json", b"{")
            refused(code, body, "not JSON")
        code, body = post_submission(server.url, noisy, {"split": "val", "method": "m"}, "good.json",
                                     honest(samples, "val"))
        refused(code, body, "3 uploads refused today", status=429)
        code, _ = post_submission(server.url, quiet, {"split": "val", "method": "m"}, "good.json",
                                  honest(samples, "val"))
        assert code == 201                                   # other teams are not affected
    finally:
        server.stop()
    with sqlite3.connect(db) as conn:
        quotas = dict(conn.execute("select t.name, q.used from quotas q join teams t on t.id = q.team_id"))
        refusals = dict(conn.execute("select t.name, r.used from refusals r join teams t on t.id = r.team_id"))
    assert quotas == {"noisy": 0, "quiet": 1} and refusals == {"noisy": 3}   # refused: slots given back


def test_a_slot_held_by_a_crashed_validation_is_returned_at_start(release, samples, tmp_path):
    """The state a server killed during validation leaves (a hold owned by a dead process): the next start gives
    the slot back, counts the refusal and writes it to the audit log."""
    db_path = str(tmp_path / "crash.db")
    token = team(db_path, "crashed")
    dead = subprocess.Popen(["true"])
    dead.wait()
    db = Database(db_path)
    held = db.admit(db.team("crashed").id, "val", daily_limit=1, refused_limit=10,
                    holder=f"{socket.gethostname()}:{dead.pid}/abc")
    assert held.hold is not None
    assert db.admit(db.team("crashed").id, "val", 1, 10, "x").refused == "daily"   # the slot is taken
    db.dispose()
    server = ServerProcess(release, db_path, tmp_path, "--daily-limit", "1", "--bootstrap", "20")
    try:
        code, body = post_submission(server.url, token, {"split": "val", "method": "m"}, "p.json",
                                     honest(samples, "val"))
        assert code == 201, body
    finally:
        server.stop()
    audit = cli("leaderboard", "audit", "--db", db_path, "--team", "crashed")
    assert audit.returncode == 0 and "upload-interrupted" in audit.stdout and "submitted" in audit.stdout


# ------------------------------------------------------------------------------------ what leaves the server

def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v)


def test_test_aggregates_are_served_rounded_to_what_the_page_shows(server, samples):
    """The crafted submission of the review (one image full, the rest empty) reads the target's share of the split
    only to the page's 0.1 point; the API, the board and the page agree."""
    token = team(server.db, "arithmeticians")
    target = samples["test"][0].id
    code, body = post_submission(server.url, token, {"split": "test", "method": "probe"}, "p.json",
                                 honest(samples, "test", full=target))
    assert code == 201, body
    done = server.wait_status(body["id"], timeout=120)
    assert done["status"] == "done"
    values = list(_floats(done["results"]))
    assert values and all(v == round(v, 3) for v in values), values
    assert "queries" not in done["results"]
    assert set(done["results"]["groups"]) == {"overall", "short", "long"}    # no size classes, no small groups
    board = get_json(server.url + "/api/leaderboard?split=test&reported=false")[1]
    row = next(r for r in board["rows"] if r["team"] == "arithmeticians")
    assert row["groups"]["overall"] == done["results"]["groups"]["overall"]
    assert all(v == round(v, 3) for v in _floats([row["groups"], row["not_distinguishable_from_above"]]))
    page = urllib.request.urlopen(f"{server.url}/submissions/{body['id']}", timeout=30).read().decode()
    assert f"{100 * done['results']['groups']['overall']['ciou']:.1f}" in page


def test_database_and_ground_truth_cache_are_private(server):
    assert stat.S_IMODE(os.stat(server.db).st_mode) == 0o600
    for suffix in ("-wal", "-shm"):
        if os.path.exists(server.db + suffix):
            assert stat.S_IMODE(os.stat(server.db + suffix).st_mode) == 0o600
    cache = server.work / "gt-cache"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    files = list(cache.glob("gt-*.npz"))
    assert files and all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)


def test_ground_truth_cache_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    from reasonseg.metrics.groundtruth import load_ground_truth

    release = write_sample_release(tmp_path / "release")
    cache = tmp_path / "cache"
    first = load_ground_truth(release, "val", cache_dir=cache)
    warm = load_ground_truth(release, "val", cache_dir=cache)
    assert len(list(cache.glob("gt-*.npz"))) == 1 and warm.fingerprint == first.fingerprint   # warm: read back
    path = sorted((release / "val").glob("*.json"))[0]
    before = path.stat()
    raw = bytearray(path.read_bytes())
    at = raw.index(b'"text"') + len(b'"text"')
    while not chr(raw[at]).isascii() or not chr(raw[at]).isalpha():    # the first letter of the first text
        at += 1
    raw[at] = ord(chr(raw[at]).swapcase())
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))       # size and mtime as before
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    after = load_ground_truth(release, "val", cache_dir=cache)
    assert after.masks[path.stem].texts[0] != first.masks[path.stem].texts[0]
    assert after.masks[path.stem].texts[0].lower() == first.masks[path.stem].texts[0].lower()
    assert after.fingerprint != first.fingerprint


# ------------------------------------------------------------------------------------- operating the board

def test_rotate_and_revoke_refuse_old_tokens_at_once_and_keep_submissions(server, samples):
    old = team(server.db, "operators")
    assert post_submission(server.url, old, {"split": "val", "method": "m1"}, "p.json",
                           honest(samples, "val"))[0] == 201
    rotated = cli("leaderboard", "rotate-token", "operators", "--db", server.db)
    assert rotated.returncode == 0
    new = rotated.stdout.strip()
    assert new.startswith("rsl_") and new != old
    code, body = post_submission(server.url, old, {"split": "val", "method": "m"}, "p.json", honest(samples, "val"))
    refused(code, body, "token", status=401)
    code, body = post_submission(server.url, new, {"split": "val", "method": "m2"}, "p.json",
                                 honest(samples, "val"))
    assert code == 201
    server.wait_status(body["id"], timeout=120)
    revoked = cli("leaderboard", "revoke-team", "operators", "--reason", "shared labels", "--db", server.db)
    assert revoked.returncode == 0, revoked.stderr
    code, body = post_submission(server.url, new, {"split": "val", "method": "m"}, "p.json", honest(samples, "val"))
    refused(code, body, "token", status=401)
    listed = get_json(server.url + "/api/teams/operators/submissions")[1]["submissions"]
    assert [s["method"] for s in listed] == ["m1", "m2"] and all(s["team_revoked"] for s in listed)
    board = get_json(server.url + "/api/leaderboard?split=val&reported=false")[1]
    assert "operators" not in {r["team"] for r in board["rows"]}
    page = urllib.request.urlopen(server.url + "/teams/operators", timeout=30).read().decode()
    assert 'id="revoked"' in page and "m1" in page and "m2" in page
    again = cli("leaderboard", "rotate-token", "operators", "--db", server.db)
    assert again.returncode == 2 and "revoked" in again.stderr and "Traceback" not in again.stderr
    unknown = cli("leaderboard", "revoke-team", "nobody", "--db", server.db)
    assert unknown.returncode == 2 and "no team 'nobody'" in unknown.stderr
    audit = cli("leaderboard", "audit", "--db", server.db, "--team", "operators")
    for action in ("add-team", "submitted", "rotate-token", "revoke-team"):
        assert action in audit.stdout, audit.stdout
    assert "shared labels" in audit.stdout


def test_every_submission_is_kept_and_the_board_ranks_one_per_team_by_its_rule(server, samples):
    token = team(server.db, "prolific")
    ids = []
    for method, full in (("first", samples["val"][0].id), ("second", None), ("third", samples["val"][1].id)):
        code, body = post_submission(server.url, token, {"split": "val", "method": method}, "p.json",
                                     honest(samples, "val", full=full))
        assert code == 201
        ids.append(body["id"])
    for sid in ids:
        server.wait_status(sid, timeout=120)
    board = get_json(server.url + "/api/leaderboard?split=val&reported=false")[1]
    rows = [r for r in board["rows"] if r["team"] == "prolific"]
    assert len(rows) == 1 and rows[0]["method"] == "third" and rows[0]["submission_id"] == ids[-1]
    assert "One row per team" in board["ranking"]
    listed = get_json(server.url + "/api/teams/prolific/submissions")[1]["submissions"]
    assert [s["id"] for s in listed] == ids and all(s["status"] == "done" for s in listed)
    index = urllib.request.urlopen(server.url + "/", timeout=30).read().decode()
    assert "One row per team" in index and "/teams/prolific" in index
    assert get_json(server.url + "/api/teams/nobody/submissions")[0] == 404


def test_a_restarted_server_with_its_predecessors_pid_releases_the_old_hold(tmp_path):
    """pid 1 in a container: the same pid, another process; the identity's nonce tells them apart."""
    db = Database(str(tmp_path / "pid.db"))
    db.add_team("containers")
    team_id = db.team("containers").id
    me = f"{socket.gethostname()}:{os.getpid()}"
    held = db.admit(team_id, "val", daily_limit=1, refused_limit=10, holder=f"{me}/before")
    assert db.release_interrupted_holds(current=f"{me}/before") == []          # its own live hold stays
    assert db.release_interrupted_holds(current=f"{me}/after") == [held.hold]  # a predecessor's is released
    assert db.admit(team_id, "val", 1, 10, f"{me}/after").hold is not None     # the slot is back
    db.dispose()


def test_kill_9_during_validation_gives_the_slot_back_at_restart(release, samples, tmp_path):
    """A real crash: SIGKILL while the server validates an upload (one run per pixel makes it take seconds)."""
    import threading

    db = str(tmp_path / "kill.db")
    token = team(db, "killed")
    slow = predictions_doc([{"id": s.id, "text_index": k, "mask": {"size": [s.height, s.width],
                                                                   "counts": [1] * (s.height * s.width)}}
                            for s in samples["val"] for k in range(max(len(s.texts), 1))])
    server = ServerProcess(release, db, tmp_path, "--daily-limit", "1", "--bootstrap", "20")
    sender = threading.Thread(target=lambda: _ignore_errors(post_submission, server.url, token,
                                                            {"split": "val", "method": "m"}, "slow.json", slow))
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(db, timeout=30) as conn:
                if conn.execute("select count(*) from holds").fetchone()[0]:
                    break
            assert time.monotonic() < deadline, "the upload was never held"
            time.sleep(0.005)
    finally:
        server.kill()
        sender.join(60)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select used from quotas").fetchone() == (1,)          # the crash kept the slot
        assert conn.execute("select count(*) from submissions").fetchone() == (0,)
    restarted = ServerProcess(release, db, tmp_path, "--daily-limit", "1", "--bootstrap", "20")
    try:
        code, body = post_submission(restarted.url, token, {"split": "val", "method": "m"}, "p.json",
                                     honest(samples, "val"))
        assert code == 201, body                                                     # ... and got it back
    finally:
        restarted.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("select used from refusals").fetchone() == (1,)
        assert conn.execute("select count(*) from audit_log where action = 'upload-interrupted'").fetchone() == (1,)


def _ignore_errors(call, *args):
    try:
        call(*args, timeout=120)
    except OSError:     # the server was killed under it
        pass
