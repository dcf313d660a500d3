"""The real server process on 127.0.0.1: crash and restart, concurrent uploads, streaming limit, the CLI."""
from __future__ import annotations

import json
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from lb_helpers import ServerProcess, cli, get_json, multipart, post_submission


def _token(db: str, name: str) -> str:
    result = cli("leaderboard", "add-team", name, "--db", db)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_kill_9_while_scoring_then_restart_completes_the_submission(lb_release, lb_preds, tmp_path):
    db = str(tmp_path / "crash.db")
    token = _token(db, "crashers")
    # Millions of bootstrap resamples make scoring slow enough to be caught in the act.
    server = ServerProcess(lb_release, db, tmp_path, "--bootstrap", "2000000", "--threads", "1")
    try:
        code, body = post_submission(server.url, token, {"split": "val", "method": "center-prior"}, "p.json",
                                     lb_preds["center-prior"]["val"].read_bytes())
        assert code == 201
        sid = body["id"]
        server.wait_status(sid, ("scoring",), timeout=30)
    finally:
        server.kill()
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status, attempts from submissions where id=?", (sid,)).fetchone() == (
            "scoring", 1)
    restarted = ServerProcess(lb_release, db, tmp_path, "--bootstrap", "200")
    try:
        done = restarted.wait_status(sid, timeout=60)
        assert done["status"] == "done" and done["results"]["groups"]["overall"]["n"] == 24
    finally:
        restarted.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("select attempts from submissions where id=?", (sid,)).fetchone() == (2,)


def test_twenty_concurrent_submissions_are_all_recorded_and_scored_once(lb_release, lb_preds, tmp_path):
    db = str(tmp_path / "busy.db")
    tokens = [_token(db, f"team {i}") for i in range(4)]
    server = ServerProcess(lb_release, db, tmp_path, "--daily-limit", "100", "--bootstrap", "100", "--threads", "3")
    try:
        jobs = []
        for n in range(20):
            method = ("empty", "full", "center-prior")[n % 3]
            split = ("val", "test")[n % 2]
            jobs.append((tokens[n % 4], {"split": split, "method": f"{method}-{n}"},
                         lb_preds[method][split].read_bytes()))
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda job: post_submission(server.url, job[0], job[1], "p.json", job[2]), jobs))
        assert [code for code, _ in answers] == [201] * 20, answers
        ids = [body["id"] for _, body in answers]
        assert len(set(ids)) == 20
        for sid in ids:
            assert server.wait_status(sid, timeout=90)["status"] == "done"
        board = get_json(server.url + "/api/leaderboard?split=test&reported=false")[1]
        assert len(board["rows"]) == 2     # one row per team (teams 1 and 3 sent the test uploads)
        assert sum(len(get_json(f"{server.url}/api/teams/team%20{i}/submissions")[1]["submissions"])
                   for i in range(4)) == 20
    finally:
        server.stop()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select status, attempts, results is not null from submissions").fetchall()
    assert rows == [("done", 1, 1)] * 20


def test_upload_limit_holds_while_the_body_streams(lb_release, tmp_path):
    db = str(tmp_path / "limit.db")
    token = _token(db, "streamers")
    server = ServerProcess(lb_release, db, tmp_path, "--max-upload-mb", "1")
    try:
        head, content_type = multipart({"split": "val", "method": "m"}, "huge.json", b"")
        head = head[: head.rindex(b"\r\n--")]           # the file part's headers, its bytes follow in chunks
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall((f"POST /api/submissions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                          f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
            chunk = b"x" * 65536
            sent, answer = 0, b""
            sock.settimeout(0.05)
            for _ in range(20 * 16):                     # offer up to 20 MiB, never declaring a length
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(head) if sent == 0 else len(chunk),
                                                    head if sent == 0 else chunk))
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    continue
                if answer:
                    break
            sock.settimeout(10)
            while b'"}' not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent * len(chunk) < 4 * 1024 * 1024       # refused long before the client was done
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert "limit" in body["error"]
    finally:
        server.stop()


def test_cli_submit_prints_the_row_and_export_writes_the_static_site(lb_release, lb_preds, tmp_path):
    db = str(tmp_path / "cli.db")
    token = _token(db, "cli team")
    server = ServerProcess(lb_release, db, tmp_path, "--bootstrap", "100")
    try:
        result = cli("submit", str(lb_preds["center-prior"]["test"]), "--server", server.url, "--token", token,
                     "--method", "prior <b>", "--meta", "trained_on_val=false", "--meta", "model_size=0B")
        assert result.returncode == 0, result.stderr
        assert "overall" in result.stdout and "short" in result.stdout and "/submissions/1" in result.stdout
        bad = cli("submit", str(lb_preds["center-prior"]["val"]), "--server", server.url, "--token", token,
                  "--split", "test", "--method", "x")
        assert bad.returncode == 2 and "split 'val'" in bad.stderr and "Traceback" not in bad.stderr
        wrong = cli("submit", str(lb_preds["center-prior"]["val"]), "--server", server.url, "--token", "nope",
                    "--split", "val", "--method", "x")
        assert wrong.returncode == 2 and "401" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
        gone = cli("submit", str(lb_preds["center-prior"]["val"]), "--server", "http://127.0.0.1:1", "--token", "t",
                   "--split", "val", "--method", "x")
        assert gone.returncode == 2 and "Traceback" not in gone.stderr
    finally:
        server.stop()
    exported = cli("leaderboard", "export", "--db", db, "--out", str(tmp_path / "site"))
    assert exported.returncode == 0, exported.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    assert "prior &lt;b&gt;" in index and "submissions/1.html" in index and "reported in paper" in index
    doc = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert doc["splits"]["test"][0]["method"] and "queries" not in json.dumps(doc)
    assert (tmp_path / "site" / "submissions" / "1.html").is_file()


def test_demo_step_serves_submits_exports_and_stops(lb_release, lb_preds, tmp_path):
    import threading

    from reasonseg.leaderboard.demo import demo_step

    before = threading.active_count()
    index = demo_step(tmp_path / "site", lb_release,
                      {m: lb_preds[m] for m in ("empty", "center-prior")},
                      meta={"center-prior": {"training_data": "ReasonSeg train masks"}}, bootstrap=100)
    assert index == tmp_path / "site" / "index.html"
    doc = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    for split in ("val", "test"):
        assert {r["method"] for r in doc["splits"][split] if not r["reported"]} == {"empty", "center-prior"}
    assert "ReasonSeg train masks" in index.read_text()
    assert len(list((tmp_path / "site" / "submissions").glob("*.html"))) == 4
    assert threading.active_count() <= before + 1      # the server thread has stopped
