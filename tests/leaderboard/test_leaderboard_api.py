"""The leaderboard API through FastAPI's client: scoring, rules, hostile inputs, and what never leaves the server."""
from __future__ import annotations

import json
import re
import sqlite3
import time

import numpy as np
import pytest
from lb_helpers import multipart, zip_bytes

from reasonseg.masks import encode_rle
from reasonseg.metrics.scoring import evaluate
from reasonseg.submission import read_predictions


def _post(client, token, split, method, path_or_bytes, filename="preds.json", **meta):
    data = path_or_bytes.read_bytes() if hasattr(path_or_bytes, "read_bytes") else path_or_bytes
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/api/submissions", headers=headers, data={"split": split, "method": method, **meta},
                       files={"file": (filename, data, "application/octet-stream")})


def _wait(client, sid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/submissions/{sid}").json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"submission {sid} not scored: {body}")


def test_scores_match_the_command_line_scorer_and_test_shows_aggregates_only(lb_server, lb_release, lb_preds):
    client, _db, token = lb_server()
    ids = {}
    for split in ("val", "test"):
        r = _post(client, token, split, "center-prior", lb_preds["center-prior"][split], trained_on_val="false",
                  checkpoint_selected_on="last", model_size="0B")
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "pending" and r.headers["location"] == f"/api/submissions/{r.json()['id']}"
        ids[split] = r.json()["id"]
    for split, sid in ids.items():
        body = _wait(client, sid)
        assert body["status"] == "done", body
        expected = evaluate(lb_release, lb_preds["center-prior"][split], split, cache_dir=None, bootstrap=0)
        for group in ("overall", "short", "long"):
            got = body["results"]["groups"][group]
            want = expected.document["groups"][group]
            if split == "val":    # exact, as the command line scores it
                assert got["giou"] == pytest.approx(want["giou"], abs=1e-12)
                assert got["ciou"] == pytest.approx(want["ciou"], abs=1e-12)
            else:                 # test aggregates leave the server rounded to what the page shows
                assert got["giou"] == round(want["giou"], 3) and got["ciou"] == round(want["ciou"], 3)
            assert len(got["giou_ci"]) == 2 and got["giou_ci"][0] <= got["giou"] <= got["giou_ci"][1]
        assert "root" not in body["results"]["dataset"]          # no server paths
        assert body["meta"] == {"trained_on_val": False, "checkpoint_selected_on": "last", "model_size": "0B"}
    assert len(client.get(f"/api/submissions/{ids['val']}").json()["results"]["queries"]) == 24
    assert "queries" not in client.get(f"/api/submissions/{ids['test']}").json()["results"]


def test_tokens_are_required_and_only_their_hash_is_stored(lb_server, lb_preds, tmp_path):
    client, _db, token = lb_server()
    path = lb_preds["empty"]["val"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": token},
                    {"Authorization": f"Bearer {token[:-1]}x"}, {"Authorization": f"Basic {token}"}):
        r = client.post("/api/submissions", headers=headers, data={"split": "val", "method": "m"},
                        files={"file": ("p.json", path.read_bytes())})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert set(r.json()) == {"error"} and "token" in r.json()["error"]
    secret = token.split("_", 2)[2]
    with sqlite3.connect(tmp_path / "lb.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump and token not in dump
    assert _post(client, token, "val", "m", path).status_code == 201


def test_upload_limit_daily_limit_and_refused_uploads_do_not_count(lb_server, lb_preds):
    client, db, token = lb_server(daily_limit=2, max_upload_bytes=20_000)
    big = b'{"format": "reasonseg-predictions", "pad": "' + b"x" * 200_000 + b'"}'
    r = _post(client, token, "val", "m", big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # Declared length absent (chunked body): the limit still holds while the body streams in.
    body, content_type = multipart({"split": "val", "method": "m"}, "big.json", big)
    r = client.post("/api/submissions", content=iter([body[i:i + 4096] for i in range(0, len(body), 4096)]),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    assert r.status_code == 413
    assert _post(client, token, "val", "m", b"not json").status_code == 400   # refused: gives its slot back
    assert _post(client, token, "val", "m", lb_preds["empty"]["val"]).status_code == 201
    assert _post(client, token, "val", "m", lb_preds["full"]["val"]).status_code == 201
    r = _post(client, token, "val", "m", lb_preds["center-prior"]["val"])
    assert r.status_code == 429 and "2 val submissions" in r.json()["error"]
    assert 0 < int(r.headers["retry-after"]) <= 86400
    assert _post(client, token, "test", "m", lb_preds["empty"]["test"]).status_code == 201  # per split
    other = db.add_team("other team")
    assert _post(client, other, "val", "m", lb_preds["empty"]["val"]).status_code == 201   # per team


def test_malformed_files_get_the_validators_message(lb_server, lb_preds, tmp_path):
    client, _db, token = lb_server()
    bad = tmp_path / "bad.json"
    known = json.loads(lb_preds["empty"]["val"].read_text())["predictions"][0]   # a real id, so the RLE is read
    bad.write_text(json.dumps({"format": "reasonseg-predictions", "version": 1, "predictions": [
        {"id": known["id"], "text_index": 0, "mask": {"size": known["mask"]["size"], "counts": "!!"}}]}))
    with pytest.raises(Exception) as local:
        read_predictions(bad)
    r = _post(client, token, "val", "m", bad, filename="bad.json")
    assert r.status_code == 400 and local.value.message in r.json()["error"]
    assert r.json()["error"].startswith("bad.json: ") and str(tmp_path) not in r.json()["error"]
    assert "\n" not in r.json()["error"]
    # Right format, wrong split / missing queries / wrong size: the scorer's matching, before anything is stored.
    r = _post(client, token, "test", "m", lb_preds["empty"]["val"])
    assert r.status_code == 400 and "split 'val'" in r.json()["error"] and "split=val" in r.json()["error"]
    doc = json.loads(lb_preds["empty"]["val"].read_text())
    doc["predictions"] = doc["predictions"][:-3]
    r = _post(client, token, "val", "m", json.dumps(doc).encode())
    assert r.status_code == 400 and "3 of 24 queries have no prediction" in r.json()["error"]
    assert "--missing" not in r.json()["error"]
    doc = json.loads(lb_preds["empty"]["val"].read_text())
    doc["predictions"][0]["mask"] = encode_rle(np.zeros((5, 5), np.uint8))
    r = _post(client, token, "val", "m", json.dumps(doc).encode())
    assert r.status_code == 400 and "mask size 5x5" in r.json()["error"]
    for fields, needle in (({"split": "train"}, "split"), ({"method": ""}, "method"),
                           ({"trained_on_val": "maybe"}, "true or false"),
                           ({"checkpoint_selected_on": "best"}, "checkpoint_selected_on"),
                           ({"paper_url": "javascript:alert(1)"}, "http"), ({"team": "x"}, "unknown field")):
        data = {"split": "val", "method": "m", **fields}
        r = client.post("/api/submissions", headers={"Authorization": f"Bearer {token}"}, data=data,
                        files={"file": ("p.json", lb_preds["empty"]["val"].read_bytes())})
        assert r.status_code == 400 and needle in r.json()["error"], (fields, r.json())
    r = client.post("/api/submissions", headers={"Authorization": f"Bearer {token}"},
                    data={"split": "val", "method": "m"})
    assert r.status_code in (400, 415) and "file" in r.json()["error"]
    assert client.get("/api/submissions").status_code in (404, 405)
    assert client.get("/api/submissions/xyz").status_code == 400
    assert client.get("/api/submissions/99999").json() == {"error": "no submission 99999"}


def test_zip_with_parent_entries_is_refused(lb_server):
    client, _db, token = lb_server()
    data = zip_bytes({"../../etc/evil.png": b"\x89PNG\r\n\x1a\n", "ok.png": b"\x89PNG"})
    r = _post(client, token, "val", "m", data, filename="../masks.zip")
    assert r.status_code == 400 and "'..'" in r.json()["error"]
    assert r.json()["error"].startswith("masks.zip")


def test_user_strings_are_escaped_and_sql_metacharacters_are_data(lb_server, lb_preds, tmp_path):
    client, db, token = lb_server()
    method = "<script>alert('x')</script>\"; DROP TABLE submissions; --"
    meta = {"base_model": "Robert'); DROP TABLE teams;--", "training_data": "<img src=x onerror=alert(1)>",
            "paper_url": "https://example.org/?a=1&b=\"><script>x</script>"}
    r = _post(client, token, "val", method, lb_preds["full"]["val"], **meta)
    assert r.status_code == 400   # quotes and angle brackets are not allowed in URLs
    del meta["paper_url"]
    r = _post(client, token, "val", method, lb_preds["full"]["val"], **meta)
    assert r.status_code == 201
    body = _wait(client, r.json()["id"])
    assert body["method"] == method and body["meta"]["base_model"] == meta["base_model"]
    for page in (client.get("/").text, client.get(f"/submissions/{body['id']}").text):
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    with sqlite3.connect(tmp_path / "lb.db") as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type='table'")}
    assert {"teams", "submissions", "uploads", "quotas"} <= tables
    assert [t.name for t in db.teams()] == ["team-0"]


def test_no_route_serves_test_ground_truth(lb_server, lb_release, lb_preds):
    client, _db, token = lb_server()
    ids = {}
    for split in ("val", "test"):
        ids[split] = _post(client, token, split, "full", lb_preds["full"][split]).json()["id"]
        _wait(client, ids[split])
    test_ids = [p.stem for p in (lb_release / "test").glob("*.jpg")]
    test_texts = [json.loads(p.read_text(encoding="cp1252", errors="ignore"))["text"][0]
                  for p in (lb_release / "test").glob("*.json")]
    fill = {"submission_id": [str(ids["val"]), str(ids["test"]), "0", "-1", str(2**64)],
            "team": ["team-0", "nobody"]}
    probes = []
    for route in client.app.routes:
        if "GET" not in getattr(route, "methods", {"GET"}):
            continue
        params = re.findall(r"{(\w+)}", route.path)
        assert all(p in fill for p in params), f"new route {route.path}: teach this probe its parameters"
        values = fill[params[0]] if params else [""]
        for value in values:
            path = re.sub(r"{\w+}", value, route.path)
            probes += [path, path + "?split=test", path + "?split=test&reported=false"]
    probes += ["/test/" + test_ids[0] + ".json", "/static/../test/" + test_ids[0] + ".json", "/..%2ftest",
               "/api/ground_truth?split=test", "/submissions/" + str(ids["test"]) + "?queries=1"]
    for path in probes:
        r = client.get(path)
        text = r.text
        assert all(tid not in text for tid in test_ids), f"{path} shows a test id"
        assert all(t not in text for t in test_texts if len(t) > 12), f"{path} shows a test text"
        assert '"points"' not in text and '"shapes"' not in text and str(lb_release) not in text, path
    val_detail = client.get(f"/submissions/{ids['val']}").text
    assert 'id="histogram"' in val_detail
    assert 'id="histogram"' not in client.get(f"/submissions/{ids['test']}").text


def test_leaderboard_rows_badges_reported_rows_and_significance(lb_server, lb_preds):
    client, db, token = lb_server()
    second, third = db.add_team("second"), db.add_team("third")
    subs = [_post(client, token, "test", "full", lb_preds["full"]["test"], trained_on_val="true",
                  checkpoint_selected_on="test"),
            _post(client, second, "test", "full twin", lb_preds["full"]["test"], oracle="yes"),
            _post(client, third, "test", "empty", lb_preds["empty"]["test"])]
    for r in subs:
        assert _wait(client, r.json()["id"])["status"] == "done"
    board = client.get("/api/leaderboard?split=test").json()
    measured = [row for row in board["rows"] if not row["reported"]]
    reported = [row for row in board["rows"] if row["reported"]]
    assert len(reported) == 15 and all(r["badges"] == ["reported in paper"] for r in reported)
    assert {r["method"] for r in reported} >= {"LISA-7B", "LISA-13B-LLaVA1.5 (ft)"}
    by_method = {r["method"]: r for r in measured}
    assert by_method["full"]["badges"] == ["trained on val", "checkpoint chosen on test"]
    assert by_method["full twin"]["badges"] == ["oracle"]
    # Identical predictions cannot be told apart; the one ranked lower carries the mark.
    twins = sorted([by_method["full"], by_method["full twin"]], key=lambda r: r["rank"])
    assert twins[1]["not_distinguishable_from_above"]["overall"]["giou"]["delta"] == 0.0
    assert measured[0]["not_distinguishable_from_above"]["overall"]["giou"] is None   # nothing above it
    ranks = [r["rank"] for r in board["rows"]]
    assert ranks == sorted(ranks) and [r["groups"]["overall"]["giou"] for r in board["rows"]] == sorted(
        [r["groups"]["overall"]["giou"] for r in board["rows"]], reverse=True)
    assert all(not r["reported"] for r in client.get("/api/leaderboard?split=test&reported=false").json()["rows"])
    assert client.get("/api/leaderboard?split=train").status_code == 400
    page = client.get("/").text
    assert page.count('class="mark" title=') >= 1
    assert "checkpoint chosen on test" in page and "reported in paper" in page


def test_one_scoring_per_team_and_claims_are_exclusive(lb_release, lb_preds, tmp_path):
    from reasonseg.leaderboard.db import Database

    db = Database(str(tmp_path / "claims.db"))
    db.add_team("a")
    db.add_team("b")
    data = lb_preds["empty"]["val"].read_bytes()
    a1 = db.create_submission(1, "val", "m", {}, "p.json", data)
    a2 = db.create_submission(1, "val", "m", {}, "p.json", data)
    b1 = db.create_submission(2, "val", "m", {}, "p.json", data)
    first = db.claim_next("host:1/x")
    assert first.id == a1 and first.status == "scoring" and first.attempts == 1
    second = db.claim_next("host:1/y")
    assert second.id == b1                      # team a is busy, so its next one waits
    assert db.claim_next("host:1/z") is None
    assert db.finish(a1, "host:1/x", {"groups": {}}, {"groups": {}})
    assert not db.finish(a1, "host:1/x", {"groups": {}}, {"groups": {}})   # a second finish changes nothing
    assert db.claim_next("host:1/z").id == a2


def test_interrupted_scoring_is_recovered(lb_release, lb_preds, tmp_path):
    import socket
    import subprocess

    from reasonseg.leaderboard.db import MAX_ATTEMPTS, Database

    db = Database(str(tmp_path / "rec.db"))
    db.add_team("a")
    db.add_team("b")
    data = lb_preds["empty"]["val"].read_bytes()
    dead = subprocess.Popen(["true"])
    dead.wait()
    here = db.create_submission(1, "val", "m", {}, "p.json", data)
    remote = db.create_submission(2, "val", "m", {}, "p.json", data)
    db.claim_next(f"{socket.gethostname()}:{dead.pid}/abc")          # its process is gone
    db.claim_next("elsewhere:1/abc")                                    # another host: wait for the lease
    assert db.recover_interrupted(lease_s=3600) == [here]
    assert db.recover_interrupted(lease_s=0.0, now=time.time() + 1) == [remote]
    assert {s.status for s in db.submissions()} == {"pending"}
    for _ in range(MAX_ATTEMPTS - 1):
        db.claim_next("elsewhere:1/abc")
        db.recover_interrupted(lease_s=0.0, now=time.time() + 1)
    db.claim_next("elsewhere:1/abc")
    db.recover_interrupted(lease_s=0.0, now=time.time() + 1)
    failed = [s for s in db.submissions() if s.status == "failed"]
    assert failed and "interrupted" in failed[0].error
