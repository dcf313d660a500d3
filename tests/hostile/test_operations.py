"""Operations (issue 22, point 5) through the command line as subprocesses, with real SQLite databases and FIFOs:
leaderboard commands need an existing database, add-team makes it private, export survives a kill, special files
and symlink loops are one line (never a hang: every run has a timeout), huge integers are one line, `serve` checks
before it speaks, and a dropped upload is one log line."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import assert_one_line_error
from leaderboard.lb_helpers import REPO, ServerProcess, cli
from upload_helpers import predictions_doc

from reasonseg.masks import encode_rle

HANG_S = 60     # a run that blocks on a FIFO is killed here, and fails its test

pytest.importorskip("sqlalchemy")      # `release` and `samples` come from conftest.py


@pytest.fixture(scope="module")
def honest(samples, tmp_path_factory):
    entries = [{"id": s.id, "text_index": 0, "mask": encode_rle(np.zeros((s.height, s.width), np.uint8))}
               for s in samples["val"]]
    path = tmp_path_factory.mktemp("honest") / "honest.json"
    path.write_bytes(predictions_doc(entries))
    return path


def run(*args, cwd=None, umask: int | None = None) -> subprocess.CompletedProcess:
    def set_umask():
        os.umask(umask)

    return subprocess.run([sys.executable, "-m", "reasonseg.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=HANG_S, cwd=cwd or REPO, preexec_fn=set_umask if umask is not None else None)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------------------------------------------- databases

COMMANDS = [["teams"], ["audit"], ["export", "--out", "{site}", "--overwrite"], ["rotate-token", "a"],
            ["revoke-team", "a"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_leaderboard_commands_refuse_a_missing_database_and_create_nothing(tmp_path, command):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("the published board")
    typo = tmp_path / "leaderbaord.db"
    args = [a.replace("{site}", str(site)) for a in command]
    proc = run("leaderboard", *args, "--db", typo)
    assert_one_line_error(proc, str(typo), "not found")
    assert not typo.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    assert (site / "index.html").read_text() == "the published board"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_leaderboard_commands_refuse_an_empty_file(tmp_path, command):
    empty = tmp_path / "empty.db"
    empty.touch(mode=0o644)
    os.chmod(empty, 0o644)
    args = [a.replace("{site}", str(tmp_path / "site")) for a in command]
    assert_one_line_error(run("leaderboard", *args, "--db", empty), str(empty), "empty")
    assert empty.stat().st_size == 0 and mode(empty) == 0o644
    assert not (tmp_path / "site").exists()


def test_add_team_creates_the_database_private_even_when_it_was_precreated(tmp_path):
    new = tmp_path / "new.db"
    assert run("leaderboard", "add-team", "a", "--db", new, umask=0o022).returncode == 0
    assert mode(new) == 0o600
    touched = tmp_path / "touched.db"
    touched.touch()
    os.chmod(touched, 0o644)
    assert run("leaderboard", "add-team", "a", "--db", touched, umask=0o022).returncode == 0
    assert mode(touched) == 0o600
    assert run("leaderboard", "teams", "--db", touched).returncode == 0
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"touched.db{suffix}").exists():
            assert mode(tmp_path / f"touched.db{suffix}") == 0o600


def test_serve_checks_data_and_database_before_it_says_anything(tmp_path, release):
    db = tmp_path / "lb.db"
    assert run("leaderboard", "add-team", "a", "--db", db).returncode == 0
    proc = run("leaderboard", "serve", "--data", tmp_path / "no-release", "--db", db, "--port", "9")
    assert_one_line_error(proc, "no-release")
    assert "serving" not in proc.stdout + proc.stderr
    proc = run("leaderboard", "serve", "--data", release, "--db", tmp_path / "typo.db", "--port", "9")
    assert_one_line_error(proc, "typo.db", "not found")
    assert "serving" not in proc.stdout + proc.stderr and not (tmp_path / "typo.db").exists()


# ---------------------------------------------------------------------------------------------------- export

KILL_EXPORT = r"""
import os, signal, sys
import reasonseg.outputs as outputs

n, calls = int(sys.argv[1]), [0]

def killing(function):
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:            # as a power cut or kill -9 between two renames
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return wrapped

os.replace, os.rename = killing(os.replace), killing(os.rename)
if hasattr(outputs, "_exchange"):
    outputs._exchange = killing(outputs._exchange)
from reasonseg.cli import main
sys.argv = ["reasonseg", *sys.argv[2:]]
main()
"""


USER_FILES = {".git/HEAD": "ref: refs/heads/main\n", "CNAME": "board.example.org\n"}   # the site's own, not ours


def test_export_killed_at_any_step_leaves_the_whole_old_site_or_the_whole_new_one(tmp_path):
    db, site = tmp_path / "lb.db", tmp_path / "site"
    assert run("leaderboard", "add-team", "a", "--db", db).returncode == 0
    for name, text in USER_FILES.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    export = ["leaderboard", "export", "--db", str(db), "--out", str(site), "--overwrite"]
    assert run(*export).returncode == 0
    # The old site, told apart from a new one in its table and in an entry swapped before the table.
    old_index = (site / "index.html").read_text() + "<!-- old -->\n"
    old_json = (site / "leaderboard.json").read_text().rstrip() + " \n"
    killed = 0
    for n in range(1, 30):
        (site / "index.html").write_text(old_index)
        (site / "leaderboard.json").write_text(old_json)
        proc = subprocess.run([sys.executable, "-c", KILL_EXPORT, str(n), *export], capture_output=True, text=True,
                              timeout=HANG_S, cwd=REPO)
        index = (site / "index.html").read_text() if (site / "index.html").is_file() else None
        assert index is not None, f"killed at rename {n}: no index.html"
        table_old, json_old = index == old_index, (site / "leaderboard.json").read_text() == old_json
        assert table_old == json_old, f"killed at step {n}: a mix of the old and the new site"
        assert table_old or (index.rstrip().endswith("</html>") and "<!-- old -->" not in index), n
        assert {name: (site / name).read_text() for name in USER_FILES} == USER_FILES
        assert (site / "submissions").is_dir() and (site / "teams").is_dir()
        if proc.returncode == -signal.SIGKILL:
            assert table_old
            killed += 1
            continue
        assert proc.returncode == 0, proc.stderr
        assert not table_old
        break
    assert killed >= 1      # killed before the exchange: the old site whole
    # The next export goes through; the user's files stay, and nothing else is left in the site.
    assert run(*export).returncode == 0
    assert sorted(p.name for p in site.iterdir()) == [".git", "CNAME", "index.html", "leaderboard.json",
                                                       "submissions", "teams"]
    assert {name: (site / name).read_text() for name in USER_FILES} == USER_FILES


# ---------------------------------------------------------------------------------------- special input files

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


def test_results_and_prompt_files_that_are_fifos_are_one_line(tmp_path, release, fifo):
    for args in (["table", fifo], ["report", release, fifo, "--out", tmp_path / "report"]):
        assert_one_line_error(run(*args), str(fifo), "named pipe")
    work = tmp_path / "rephrase-release"
    assert run("sample", "--out", work).returncode == 0
    for option in ("--prompt", "--prices"):
        proc = run("rephrase", work / "release", option, fifo, "--dry-run", "--cache", tmp_path / "cache.sqlite")
        assert_one_line_error(proc, str(fifo), "named pipe", option)


def test_devices_and_fifos_as_predictions_or_release_are_one_line(tmp_path, release, honest, fifo):
    assert_one_line_error(run("table", "/dev/null"), "/dev/null", "character device")
    assert_one_line_error(run("score", release, fifo, "--split", "val"), str(fifo), "named pipe")
    assert_one_line_error(run("score", fifo, honest, "--split", "val"), str(fifo), "named pipe")


def test_a_release_folder_that_is_a_symlink_loop_is_one_line(tmp_path, honest):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert_one_line_error(run("score", loop, honest, "--split", "val"), str(loop), "symlink loop")
    assert_one_line_error(run("compare", loop, honest, honest, "--split", "val"), str(loop), "symlink loop")


def test_integers_of_over_4300_digits_are_one_line(tmp_path, release, honest):
    doc = json.loads(honest.read_text())
    text = json.dumps(doc).replace('"text_index": 0', '"text_index": ' + "7" * 5000, 1)
    big = tmp_path / "big.json"
    big.write_text(text)
    assert_one_line_error(run("score", release, big, "--split", "val"), "big.json", "4300 digits")
    assert_one_line_error(run("compare", release, honest, big, "--split", "val"), "big.json", "4300 digits")
    assert_one_line_error(run("submit", big, "--server", "http://127.0.0.1:9", "--token", "t"), "big.json",
                          "4300 digits")
    results = tmp_path / "results.json"
    results.write_text('{"format": "reasonseg-results", "version": 1, "split": "val", "n": ' + "9" * 5000 + "}")
    assert_one_line_error(run("table", results), "results.json", "4300")


# ------------------------------------------------------------------------------------------------ server log

def test_a_dropped_upload_logs_one_line(tmp_path, release):
    db = str(tmp_path / "lb.db")
    token = cli("leaderboard", "add-team", "dropper", "--db", db).stdout.strip()
    server = ServerProcess(release, db, tmp_path, "--bootstrap", "20")
    try:
        head = (b'--b\r\nContent-Disposition: form-data; name="split"\r\n\r\nval\r\n--b\r\nContent-Disposition: '
                b'form-data; name="file"; filename="p.json"\r\n\r\n{"format": ' + b" " * 100_000)
        with socket.create_connection(("127.0.0.1", server.port)) as conn:
            conn.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
                         + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n"
                         + head)
            time.sleep(0.5)
        log = ""
        deadline = time.monotonic() + 10
        while "dropped" not in log and time.monotonic() < deadline:
            time.sleep(0.2)
            log = open(server.log.name).read()
    finally:
        server.stop()
    log = open(server.log.name).read()
    lines = [line for line in log.splitlines() if line.strip() and not line.startswith("serving ")]
    assert "Traceback" not in log and len(lines) == 1 and "dropped" in lines[0] and "dropper" in lines[0], log
