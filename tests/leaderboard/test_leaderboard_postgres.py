"""The leaderboard on a real PostgreSQL server (started here with initdb + pg_ctl): two server processes share it,
as a multi-host deployment would, and every submission is scored exactly once."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lb_helpers import ServerProcess, cli, free_port, get_json, post_submission


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def pg_url():
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql): no initdb/pg_ctl to start a server")
    try:
        import psycopg
    except ImportError:
        pytest.skip("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    root = Path(tempfile.mkdtemp(prefix="reasonseg-pg-"))
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:   # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        for path in (data, sock):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()

    def run(*args: str) -> None:
        result = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(sock / "server.log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE reasonseg")
        yield f"postgresql://postgres@127.0.0.1:{port}/reasonseg"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_servers_share_postgres_and_score_each_submission_once(pg_url, lb_release, lb_preds, tmp_path):
    from reasonseg.leaderboard.db import Database
    from reasonseg.leaderboard.render import export_static

    tokens = [cli("leaderboard", "add-team", f"pg team {i}", "--db", pg_url).stdout.strip() for i in range(3)]
    assert all(t.startswith("rsl_") for t in tokens)
    servers = [ServerProcess(lb_release, pg_url, tmp_path, "--bootstrap", "100", "--daily-limit", "4")
               for _ in range(2)]
    try:
        jobs = [(servers[n % 2].url, tokens[n % 3], {"split": ("val", "test")[n % 2], "method": f"m{n} 'q\";--"},
                 lb_preds[("empty", "full", "center-prior")[n % 3]][("val", "test")[n % 2]].read_bytes())
                for n in range(12)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda j: post_submission(j[0], j[1], j[2], "p.json", j[3]), jobs))
        assert [code for code, _ in answers] == [201] * 12, answers
        for _, body in answers:
            assert servers[0].wait_status(body["id"], timeout=90)["status"] == "done"
        # Each team sent 2 per split: 2 more fit under the limit of 4, the 3rd is refused.
        extra = [post_submission(servers[1].url, tokens[0], {"split": "val", "method": "late"}, "p.json",
                                 lb_preds["empty"]["val"].read_bytes())[0] for _ in range(3)]
        assert extra == [201, 201, 429]
        code, board = get_json(servers[1].url + "/api/leaderboard?split=test&reported=false")
        assert code == 200 and len(board["rows"]) == 3      # one ranked row per team
    finally:
        for server in servers:
            server.stop()
    db = Database(pg_url)
    try:
        subs = db.submissions(with_results=True)
        assert len(subs) == 14 and {s.method for s in subs} >= {"m0 'q\";--"}
        done = [s for s in subs if s.method != "late"]
        assert all(s.status == "done" and s.attempts == 1 and s.results for s in done)
        index = export_static(db, tmp_path / "site")
        assert " &#39;q&#34;;--" in index.read_text()           # each team's ranked method, escaped
        m0 = next(sub.id for sub in subs if sub.method.startswith("m0 "))
        assert "m0 &#39;q&#34;;--" in (index.parent / "submissions" / f"{m0}.html").read_text()   # every one kept
    finally:
        db.dispose()
