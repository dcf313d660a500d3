"""The SQLite response cache and call ledger.

`responses` holds one row per completed item (an accepted reply, or one rejected after its retries), keyed by a
SHA-256 of everything that decides the reply; a rerun or a run after a crash reads it instead of calling again.
`calls` logs every HTTP attempt (request id, tokens, latency, cost, outcome, and the reply itself); an attempt is
written as `in_flight` before it is sent, so a call cut off by a kill is still visible (as `lost`) to the next run,
and the replies it holds are the retry state a later run resumes from (a paid reply is never asked for again
identically). `runs` records each run; `writes` each release file a run is about to replace, with the checksum it
will have, so a later run can repair the manifest of a run that was killed.

Every write commits at once, in WAL mode: a killed process loses at most the attempts in flight.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ...errors import BuildError
from ...processes import pid_alive
from .checks import MAX_REPLY_CHARS

SCHEMA_VERSION = 2
KEY_SCHEMA = "reasonseg-rephrase-key/1"

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL, model TEXT NOT NULL, prompt_version TEXT NOT NULL,
    temperature REAL NOT NULL, seed INTEGER, n INTEGER NOT NULL,
    input_text TEXT NOT NULL, request_json TEXT NOT NULL,
    status TEXT NOT NULL,                -- ok | rejected
    outputs_json TEXT NOT NULL,          -- accepted texts (rephrasings, or the one explanation)
    dropped_json TEXT NOT NULL,          -- [{"text", "reason"}] single outputs a check dropped
    reason TEXT,                         -- why a rejected item was rejected
    content TEXT,                        -- the raw reply of the final attempt
    response_sha256 TEXT, request_id TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    attempts INTEGER NOT NULL, run_id TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, key TEXT NOT NULL, item TEXT NOT NULL, attempt INTEGER NOT NULL,
    started_at TEXT NOT NULL, latency_s REAL,
    outcome TEXT NOT NULL,               -- in_flight | ok | check_failed | http_429 | http_500 | timeout | ... | lost
    request_id TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, detail TEXT
);
CREATE INDEX IF NOT EXISTS calls_key ON calls(key);
CREATE TABLE IF NOT EXISTS writes (
    run_id TEXT NOT NULL, root TEXT NOT NULL, rel TEXT NOT NULL, sha256 TEXT NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0    -- 1 once the release's manifest holds the outcome
);
CREATE INDEX IF NOT EXISTS writes_root ON writes(root, settled);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL, config_json TEXT NOT NULL, totals_json TEXT
);
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cache_key(*, task: str, model: str, prompt_version: str, temperature: float, seed: int | None, n: int,
              text: str, messages: list[dict[str, str]]) -> str:
    """SHA-256 of what decides a reply: the rendered messages carry the input text, its form and class names."""
    payload = {"schema": KEY_SCHEMA, "task": task, "model": model, "prompt_version": prompt_version,
               "temperature": round(float(temperature), 6), "seed": seed, "n": n, "text": text,
               "messages": messages}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    key: str
    status: str
    outputs: tuple[str, ...]
    dropped: tuple[dict, ...]
    reason: str | None
    request_id: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class LedgerTotals:
    calls: int
    ok: int
    failed: int
    lost: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class ResponseCache:
    """One SQLite file; safe to share between the threads of a run (one connection behind a lock)."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                           timeout=30)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_TABLES)
                self._check_schema()
        except sqlite3.DatabaseError as exc:
            raise BuildError(f"cannot open the rephrase cache: {exc}", path=str(self.path),
                             hint="pass another --cache FILE") from None

    def _check_schema(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(calls)")}
        for column in ("content", "finish_reason"):  # schema 1 ledgers kept no replies
            if column not in columns:
                self._db.execute(f"ALTER TABLE calls ADD COLUMN {column} TEXT")
        if row is None or row[0] == "1":
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            self._db.commit()
        elif row[0] != str(SCHEMA_VERSION):
            raise BuildError(f"cache has schema {row[0]}, this reasonseg reads {SCHEMA_VERSION}",
                             path=str(self.path), hint="pass a new --cache FILE")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ responses

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT key, status, outputs_json, dropped_json, reason, request_id, prompt_tokens, "
                "completion_tokens, cost_usd FROM responses WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return CachedResponse(row[0], row[1], tuple(json.loads(row[2])), tuple(json.loads(row[3])), row[4], row[5],
                              row[6], row[7], row[8])

    def put(self, *, key: str, task: str, model: str, prompt_version: str, temperature: float, seed: int | None,
            n: int, input_text: str, request: dict, status: str, outputs: tuple[str, ...], dropped: list[dict],
            reason: str | None, content: str | None, request_id: str | None, prompt_tokens: int,
            completion_tokens: int, cost_usd: float, attempts: int, run_id: str) -> None:
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest() if content is not None else None
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, task, model, prompt_version, temperature, seed, n, input_text,
                 json.dumps(request, ensure_ascii=False), status, json.dumps(list(outputs), ensure_ascii=False),
                 json.dumps(dropped, ensure_ascii=False), reason, content, digest, request_id, prompt_tokens,
                 completion_tokens, cost_usd, attempts, run_id, now_iso()))
            self._db.commit()

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM responses WHERE key=?", (key,))
            self._db.commit()

    # --------------------------------------------------------------------------------------------- ledger

    def start_run(self, config: dict) -> str:
        """A new run id; attempts left `in_flight` by runs whose process is gone become `lost`, and runs still
        marked running whose process is gone become `killed`."""
        run_id = uuid.uuid4().hex[:16]
        with self._lock:
            rows = self._db.execute("SELECT run_id, pid, status FROM runs WHERE status='running' OR run_id IN "
                                    "(SELECT run_id FROM calls WHERE outcome='in_flight')").fetchall()
            for old, pid, status in rows:
                if pid_alive(pid) and status == "running":
                    continue
                self._db.execute("UPDATE calls SET outcome='lost', detail='process ended during the call' "
                                 "WHERE run_id=? AND outcome='in_flight'", (old,))
                if status == "running":
                    self._db.execute("UPDATE runs SET status='killed' WHERE run_id=?", (old,))
            self._db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?)",
                             (run_id, os.getpid(), now_iso(), None, "running",
                              json.dumps(config, ensure_ascii=False, sort_keys=True), None))
            self._db.commit()
        return run_id

    def finish_run(self, run_id: str, status: str, totals: dict) -> None:
        with self._lock:
            self._db.execute("UPDATE calls SET outcome='lost', detail='the run ended during the call' "
                             "WHERE run_id=? AND outcome='in_flight'", (run_id,))
            self._db.execute("UPDATE runs SET finished_at=?, status=?, totals_json=? WHERE run_id=?",
                             (now_iso(), status, json.dumps(totals, sort_keys=True), run_id))
            self._db.commit()

    def call_started(self, run_id: str, key: str, item: str, attempt: int) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO calls (run_id, key, item, attempt, started_at, outcome) VALUES (?,?,?,?,?,?)",
                (run_id, key, item, attempt, now_iso(), "in_flight"))
            self._db.commit()
            return int(cursor.lastrowid)

    def call_finished(self, call_id: int, *, outcome: str, latency_s: float, request_id: str | None = None,
                      prompt_tokens: int = 0, completion_tokens: int = 0, cost_usd: float = 0.0,
                      detail: str | None = None, content: str | None = None,
                      finish_reason: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE calls SET outcome=?, latency_s=?, request_id=?, prompt_tokens=?, completion_tokens=?, "
                "cost_usd=?, detail=?, content=?, finish_reason=? WHERE id=?",
                (outcome, round(latency_s, 4), request_id, prompt_tokens, completion_tokens, cost_usd,
                 detail[:500] if detail else None,
                 # One character past the limit is enough for a later check to fail it the same way.
                 content[:MAX_REPLY_CHARS + 1] if isinstance(content, str) else None, finish_reason, call_id))
            self._db.commit()

    def paid_replies(self, key: str) -> list[dict]:
        """The replies already received for a key (outcome ok or check_failed, any run), oldest first: the retry
        state a run resumes from."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT content, finish_reason, request_id, prompt_tokens, completion_tokens, cost_usd FROM calls "
                "WHERE key=? AND outcome IN ('ok', 'check_failed') ORDER BY id", (key,))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # ------------------------------------------------------------------------------------- release writes

    def write_intended(self, run_id: str, root: str, rel: str, sha256: str) -> None:
        """Recorded before a release file is replaced: the file will have this checksum if the rename happens."""
        with self._lock:
            self._db.execute("INSERT INTO writes (run_id, root, rel, sha256) VALUES (?,?,?,?)",
                             (run_id, root, rel, sha256))
            self._db.commit()

    def unsettled_writes(self, root: str) -> list[dict]:
        """Writes into this release whose outcome no manifest holds yet, by runs that are this one or dead."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT w.rowid AS id, w.run_id, w.rel, w.sha256, r.pid, r.status, r.started_at, r.config_json "
                "FROM writes w JOIN runs r ON r.run_id = w.run_id WHERE w.root=? AND w.settled=0 ORDER BY w.rowid",
                (root,))
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return [r for r in rows if r["pid"] == os.getpid() or not pid_alive(r["pid"])]

    def settle_writes(self, ids: list[int]) -> None:
        with self._lock:
            self._db.executemany("UPDATE writes SET settled=1 WHERE rowid=?", [(i,) for i in ids])
            self._db.commit()

    def totals(self, run_id: str | None = None) -> LedgerTotals:
        where, args = ("WHERE run_id=?", (run_id,)) if run_id else ("", ())
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), SUM(outcome IN ('ok','check_failed')), SUM(outcome NOT IN "
                "('ok','check_failed','in_flight','lost')), SUM(outcome='lost'), COALESCE(SUM(prompt_tokens),0), "
                f"COALESCE(SUM(completion_tokens),0), COALESCE(SUM(cost_usd),0) FROM calls {where}", args).fetchone()
        return LedgerTotals(row[0], row[1] or 0, row[2] or 0, row[3] or 0, row[4], row[5], float(row[6]))

    def calls(self, key: str | None = None) -> list[dict]:
        """Ledger rows (all, or one key's), oldest first."""
        where, args = ("WHERE key=?", (key,)) if key else ("", ())
        with self._lock:
            cursor = self._db.execute(f"SELECT * FROM calls {where} ORDER BY id", args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def runs(self) -> list[dict]:
        with self._lock:
            cursor = self._db.execute("SELECT * FROM runs ORDER BY started_at, rowid")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reasonseg" / "rephrase.sqlite"


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start
