"""Text that lies (issue 22, point 4): ids and method names with terminal escapes, bidi overrides or lone surrogates,
through the command line and a real `reasonseg leaderboard serve` process with its SQLite database.

What is shown (errors, `audit`, `teams`, `score`) holds the escaped form (`\\x1b`, `\\u202e`) and never the raw
character; ids and method names holding such characters are refused, and on the server the refusal is a counted,
audited 400 that gives the team's slot back.
"""
from __future__ import annotations

import json
import sqlite3
import urllib.request

import numpy as np
import pytest
from helpers import assert_one_line_error
from leaderboard.lb_helpers import ServerProcess, cli, post_submission
from upload_helpers import predictions_doc

from reasonseg.masks import encode_rle

ESC_ID = "a\x1b]0;pwned\x07\x1b[2J\x1b[31mFAKE"      # sets the window title, clears the screen, prints red
ESC_SHOWN = "a\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mFAKE"
BIDI_METHOD = "LISA-13B \u202ebaL VD yb"              # displays as "LISA-13B by DV Lab"
RAW = ("\x1b", "\x07", "\u202e", "\ufeff", "\x9b")

pytest.importorskip("sqlalchemy")      # `release` and `samples` come from conftest.py


def honest_entries(samples, split: str = "val") -> list[dict]:
    return [{"id": s.id, "text_index": 0, "mask": encode_rle(np.zeros((s.height, s.width), np.uint8))}
            for s in samples[split]]


def assert_no_raw(*texts: str) -> None:
    for text in texts:
        assert not any(char in text for char in RAW), repr(text[:300])


def write_doc(path, entries, method: str = "m"):
    doc = json.loads(predictions_doc(entries))
    doc["method"] = method
    path.write_text(json.dumps(doc))       # json escapes them: the file itself is plain ASCII
    return path


# ------------------------------------------------------------------------------------------------ command line

def test_score_shows_an_escape_sequence_id_escaped(tmp_path, release, samples):
    entries = honest_entries(samples)
    entries[0]["id"] = ESC_ID
    proc = cli("score", str(release), str(write_doc(tmp_path / "esc.json", entries)), "--split", "val",
               "--bootstrap", "0")
    line = assert_one_line_error(proc, "esc.json", ESC_SHOWN, "U+001B")
    assert_no_raw(proc.stdout, proc.stderr, line)


def test_a_huge_id_is_cut_to_200_characters_with_its_length(tmp_path, release, samples):
    entries = honest_entries(samples)
    entries[0]["id"] = "x" * 1_000_000
    proc = cli("score", str(release), str(write_doc(tmp_path / "long.json", entries)), "--split", "val",
               "--bootstrap", "0")
    line = assert_one_line_error(proc, "long.json", "(1000000 characters)")
    assert len(line) < 2500 and "x" * 200 in line and "x" * 260 not in line


def test_a_bidi_method_name_in_the_file_is_refused(tmp_path, release, samples):
    path = write_doc(tmp_path / "bidi.json", honest_entries(samples), method=BIDI_METHOD)
    proc = cli("score", str(release), str(path), "--split", "val", "--bootstrap", "0")
    line = assert_one_line_error(proc, "bidi.json", "LISA-13B \\u202ebaL VD yb", "U+202E", "method")
    assert_no_raw(proc.stdout, line)


@pytest.mark.parametrize("char", ["\u200b", "\ufeff", "\x9b", "\u2066"])   # zero-width, BOM, C1 CSI, bidi isolate
def test_invisible_and_c1_characters_in_ids_are_refused(tmp_path, release, samples, char):
    entries = honest_entries(samples)
    entries[0]["id"] = entries[0]["id"] + char
    proc = cli("score", str(release), str(write_doc(tmp_path / "inv.json", entries)), "--split", "val",
               "--bootstrap", "0")
    line = assert_one_line_error(proc, "inv.json", f"U+{ord(char):04X}")
    assert_no_raw(line)


def test_method_names_from_results_files_print_escaped_in_table_and_compare(tmp_path, release, samples):
    results = tmp_path / "r.json"
    proc = cli("score", str(release), str(write_doc(tmp_path / "p.json", honest_entries(samples))), "--split", "val",
               "--bootstrap", "0", "--out", str(results))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(results.read_text())
    doc["method"] = ESC_ID      # written by another tool, or edited by hand
    results.write_text(json.dumps(doc))
    table = cli("table", str(results))
    compare = cli("compare", str(release), str(results), str(results), "--split", "val", "--bootstrap", "20")
    for proc in (table, compare):
        assert proc.returncode == 0, proc.stderr
        assert ESC_SHOWN[:20] in proc.stdout
        assert_no_raw(proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------------------------ leaderboard

@pytest.fixture(scope="module")
def server(release, tmp_path_factory):
    work = tmp_path_factory.mktemp("safe-text-server")
    db = str(work / "lb.db")
    tokens = {}
    for name in ("forms", "files", "honest"):
        result = cli("leaderboard", "add-team", name, "--db", db)
        assert result.returncode == 0, result.stderr
        tokens[name] = result.stdout.strip()
    srv = ServerProcess(release, db, work, "--daily-limit", "3", "--refused-limit", "100", "--bootstrap", "20")
    srv.db, srv.tokens = db, tokens
    yield srv
    srv.stop()


def counters(db: str, team: str) -> tuple[int, int]:
    """(refusals counted today, daily slots in use today) of a team, read from the database itself."""
    with sqlite3.connect(db) as conn:
        team_id = conn.execute("SELECT id FROM teams WHERE name = ?", (team,)).fetchone()[0]
        refused = conn.execute("SELECT COALESCE(SUM(used), 0) FROM refusals WHERE team_id = ?", (team_id,))
        used = conn.execute("SELECT COALESCE(SUM(used), 0) FROM quotas WHERE team_id = ?", (team_id,))
        return refused.fetchone()[0], used.fetchone()[0]


def audit(db: str, team: str) -> str:
    proc = cli("leaderboard", "audit", "--db", db, "--team", team)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_bidi_method_name_is_refused_counted_and_audited_escaped(server, samples):
    doc = predictions_doc(honest_entries(samples))
    code, body = post_submission(server.url, server.tokens["forms"], {"split": "val", "method": BIDI_METHOD},
                                 "p.json", doc)
    assert code == 400 and "\\u202e" in body["error"] and "U+202E" in body["error"], (code, body)
    assert_no_raw(body["error"])
    assert counters(server.db, "forms") == (1, 0)
    log = audit(server.db, "forms")
    assert "refused" in log and "LISA-13B \\u202ebaL VD yb" in log
    assert_no_raw(log)


@pytest.mark.parametrize("bad_id, shown", [("\ud800x", "\\ud800x"), (ESC_ID, ESC_SHOWN)])
def test_a_hostile_id_in_the_file_is_a_counted_audited_400_that_frees_the_slot(server, samples, bad_id, shown):
    before = counters(server.db, "files")
    entries = honest_entries(samples)
    entries[0]["id"] = bad_id
    # ensure_ascii keeps a lone surrogate as the JSON escape \ud800, as a hostile client would send it
    doc = predictions_doc(entries)
    code, body = post_submission(server.url, server.tokens["files"], {"split": "val", "method": "plain"},
                                 "ids.json", doc)
    assert code == 400 and shown in body["error"], (code, body)
    assert_no_raw(body["error"])
    refused, used = counters(server.db, "files")
    assert (refused, used) == (before[0] + 1, before[1])       # counted, and the daily slot given back
    assert shown in audit(server.db, "files")


def test_error_bodies_are_capped(server, samples):
    entries = honest_entries(samples)
    entries[0]["id"] = "y" * 2_000_000
    code, body = post_submission(server.url, server.tokens["files"], {"split": "val", "method": "plain"},
                                 "huge.json", predictions_doc(entries))
    assert code == 400 and len(body["error"]) < 2500 and "(2000000 characters)" in body["error"], (code, body)


def test_audit_and_teams_show_stored_hostile_text_escaped(server):
    # Text stored before these checks existed (or written by another tool) is still shown escaped.
    with sqlite3.connect(server.db) as conn:
        conn.execute("INSERT INTO teams (name, key, secret_sha256, created_at) VALUES (?, 'k0', ?, 0)",
                     ("Old\x1b]0;title\x07Team", "0" * 64))
        team_id = conn.execute("SELECT id FROM teams WHERE key = 'k0'").fetchone()[0]
        conn.execute("INSERT INTO audit_log (at, actor, action, team_id, detail) VALUES (0, 'admin:x', 'note', ?, ?)",
                     (team_id, "\x1b[2J\x1b[31mgranted\u202e"))
    log = cli("leaderboard", "audit", "--db", server.db)
    assert log.returncode == 0, log.stderr
    assert "Old\\x1b]0;title\\x07Team" in log.stdout and "\\x1b[2J\\x1b[31mgranted\\u202e" in log.stdout
    teams = cli("leaderboard", "teams", "--db", server.db)
    assert teams.returncode == 0, teams.stderr
    assert "Old\\x1b]0;title\\x07Team" in teams.stdout
    assert_no_raw(log.stdout, teams.stdout)


def test_pages_show_stored_bidi_and_zero_width_text_escaped(server):
    # A method name stored before these checks existed is shown on the team's page as escapes, not as the lie.
    with sqlite3.connect(server.db) as conn:
        team_id = conn.execute("SELECT id FROM teams WHERE name = 'honest'").fetchone()[0]
        conn.execute("INSERT INTO submissions (team_id, split, method, meta, filename, file_sha256, file_bytes, "
                     "status, attempts, created_at) VALUES (?, 'val', ?, '{}', 'p.json', '', 0, 'failed', 0, 0)",
                     (team_id, BIDI_METHOD + "\u200b"))
    page = urllib.request.urlopen(server.url + "/teams/honest", timeout=30).read().decode()
    assert "LISA-13B \\u202ebaL VD yb\\u200b" in page
    assert_no_raw(page)
