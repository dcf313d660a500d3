"""The leaderboard's storage: teams, submissions (with their uploaded bytes) and daily quotas, in SQLAlchemy.

SQLite (WAL) is the default; a PostgreSQL URL serves a deployment with several server processes. Every write that
must be atomic per team (taking a quota slot, claiming a submission for scoring) runs in a transaction that first
locks the team's row: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite every write transaction is `BEGIN IMMEDIATE`,
which serialises writers outright. Reads use a second SQLite engine with ordinary deferred transactions, so WAL
readers never wait for a writer.

Tokens are `rsl_<key>_<secret>`: the key finds the team, and only SHA-256 of the secret is stored and compared in
constant time. Uploaded files are stored in the database, so that a worker on another host can score them.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, Text, create_engine, event, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..errors import LeaderboardError  # defined with the other typed errors: the client needs no SQLAlchemy
from ..processes import pid_alive

STATUSES = ("pending", "scoring", "done", "failed")
TOKEN_PREFIX = "rsl"
MAX_ATTEMPTS = 3   # a submission whose scoring killed the process this often is failed, not retried forever


class Base(DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    split: Mapped[str] = mapped_column(String(16), index=True)
    method: Mapped[str] = mapped_column(String(200))
    meta: Mapped[str] = mapped_column(Text)                 # JSON object of the submitted metadata
    filename: Mapped[str] = mapped_column(String(300))
    file_sha256: Mapped[str] = mapped_column(String(80))
    file_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    results: Mapped[str | None] = mapped_column(Text, nullable=True)   # the whole results document (server only)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)   # its aggregates (public)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Upload(Base):
    __tablename__ = "uploads"
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Quota(Base):
    __tablename__ = "quotas"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    split: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


@dataclass(frozen=True)
class TeamInfo:
    id: int
    name: str


@dataclass(frozen=True)
class SubmissionRow:
    """A submission as the rest of the package sees it (no upload bytes)."""

    id: int
    team: str
    split: str
    method: str
    meta: dict
    filename: str
    file_sha256: str
    file_bytes: int
    status: str
    error: str | None
    results: dict | None
    summary: dict | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None


def normalize_url(url: str) -> str:
    """`sqlite:///...` and `postgresql://...` URLs; a bare path means an SQLite file."""
    if "://" not in url:
        return f"sqlite:///{os.path.abspath(url)}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]   # psycopg 3, not the psycopg2 default
    return url


def utc_day(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None      # SQLAlchemy emits BEGIN itself (below), not the sqlite3 module
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    def __init__(self, url: str):
        self.url = normalize_url(url)
        try:
            if self.url.startswith("sqlite"):
                self.sqlite = True
                self.engine = _sqlite_engine(self.url, immediate=True)
                self.reader = _sqlite_engine(self.url, immediate=False)
            else:
                self.sqlite = False
                self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=20)
                self.reader = self.engine
            Base.metadata.create_all(self.engine)
        except Exception as exc:  # driver errors have no common base class worth naming
            raise LeaderboardError(f"cannot open the leaderboard database: {str(exc).splitlines()[0]}",
                                   path=url, hint="pass --db sqlite:///FILE or postgresql://USER@HOST/DB") from None

    def dispose(self) -> None:
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.reader.begin() as conn:
            yield conn

    def _lock_team(self, conn: Connection, team_id: int) -> None:
        if not self.sqlite:   # SQLite's BEGIN IMMEDIATE already holds the only write lock
            conn.execute(select(Team.id).where(Team.id == team_id).with_for_update()).first()

    # ------------------------------------------------------------------------------------------------- teams

    def add_team(self, name: str) -> str:
        """Create a team and return its token; the token is shown once, only a hash of its secret is kept."""
        name = " ".join(name.split())
        if not name or len(name) > 100:
            raise LeaderboardError("team name must be 1 to 100 characters")
        key, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.write() as conn:
            if conn.execute(select(Team.id).where(Team.name == name)).first():
                raise LeaderboardError(f"team {name!r} already exists", hint="choose another name")
            conn.execute(Team.__table__.insert().values(
                name=name, key=key, secret_sha256=hashlib.sha256(secret.encode()).hexdigest(), created_at=time.time()))
        return f"{TOKEN_PREFIX}_{key}_{secret}"

    def authenticate(self, token: str) -> TeamInfo | None:
        parts = token.split("_", 2)
        key, secret = (parts[1], parts[2]) if len(parts) == 3 and parts[0] == TOKEN_PREFIX else ("", token)
        with self.read() as conn:
            row = conn.execute(select(Team.id, Team.name, Team.secret_sha256).where(Team.key == key)).first()
        presented = hashlib.sha256(secret.encode()).hexdigest()
        # Compare even when the key is unknown, so both failures take the same time.
        expected = row.secret_sha256 if row else "0" * 64
        if hmac.compare_digest(presented, expected) and row is not None:
            return TeamInfo(row.id, row.name)
        return None

    def teams(self) -> list[TeamInfo]:
        with self.read() as conn:
            return [TeamInfo(r.id, r.name) for r in conn.execute(select(Team.id, Team.name).order_by(Team.id))]

    # ------------------------------------------------------------------------------------------------ quotas

    def take_quota(self, team_id: int, split: str, limit: int, now: float | None = None) -> bool:
        """Take one of today's `limit` slots for (team, split); False when none is left."""
        day = utc_day(now or time.time())
        with self.write() as conn:
            self._lock_team(conn, team_id)
            used = conn.execute(select(Quota.used).where(Quota.team_id == team_id, Quota.split == split,
                                                         Quota.day == day)).scalar()
            if used is None:
                conn.execute(Quota.__table__.insert().values(team_id=team_id, split=split, day=day, used=1))
                return limit >= 1
            if used >= limit:
                return False
            conn.execute(update(Quota).where(Quota.team_id == team_id, Quota.split == split, Quota.day == day)
                         .values(used=Quota.used + 1))
            return True

    def give_back_quota(self, team_id: int, split: str, now: float | None = None) -> None:
        """Return a slot taken for an upload that was then refused (invalid files do not count)."""
        day = utc_day(now or time.time())
        with self.write() as conn:
            self._lock_team(conn, team_id)
            conn.execute(update(Quota).where(Quota.team_id == team_id, Quota.split == split, Quota.day == day,
                                             Quota.used > 0).values(used=Quota.used - 1))

    # ------------------------------------------------------------------------------------------- submissions

    def create_submission(self, team_id: int, split: str, method: str, meta: dict, filename: str, data: bytes
                          ) -> int:
        """Store an accepted upload as `pending`; it is durable before anyone scores it."""
        with self.write() as conn:
            result = conn.execute(Submission.__table__.insert().values(
                team_id=team_id, split=split, method=method, meta=json.dumps(meta, sort_keys=True),
                filename=filename, file_sha256="sha256:" + hashlib.sha256(data).hexdigest(), file_bytes=len(data),
                status="pending", attempts=0, created_at=time.time()))
            sid = int(result.inserted_primary_key[0])
            conn.execute(Upload.__table__.insert().values(submission_id=sid, data=data))
        return sid

    def upload_bytes(self, submission_id: int) -> bytes:
        with self.read() as conn:
            data = conn.execute(select(Upload.data).where(Upload.submission_id == submission_id)).scalar()
        if data is None:
            raise LeaderboardError(f"submission {submission_id} has no stored file")
        return bytes(data)

    def claim_next(self, worker: str, split_filter: tuple[str, ...] | None = None) -> SubmissionRow | None:
        """Move the oldest claimable `pending` submission to `scoring` and return it, or None.

        A submission is claimable when its team has nothing else in `scoring` (one scoring per team). The claim is
        a conditional UPDATE inside a team-locked transaction, so two workers never claim the same submission.
        """
        with self.read() as conn:
            query = select(Submission.id, Submission.team_id).where(Submission.status == "pending")
            if split_filter:
                query = query.where(Submission.split.in_(split_filter))
            candidates = conn.execute(query.order_by(Submission.id).limit(50)).all()
            busy = set(conn.execute(select(Submission.team_id).where(Submission.status == "scoring")).scalars())
        for cand in candidates:
            if cand.team_id in busy:
                continue
            now = time.time()
            with self.write() as conn:
                self._lock_team(conn, cand.team_id)
                scoring = conn.execute(select(func.count()).select_from(Submission).where(
                    Submission.team_id == cand.team_id, Submission.status == "scoring")).scalar()
                if scoring:
                    busy.add(cand.team_id)
                    continue
                claimed = conn.execute(update(Submission).where(
                    Submission.id == cand.id, Submission.status == "pending").values(
                    status="scoring", worker=worker, started_at=now, heartbeat_at=now,
                    attempts=Submission.attempts + 1)).rowcount
            if claimed == 1:
                return self.submission(cand.id)
        return None

    def heartbeat(self, submission_ids: list[int], worker: str) -> None:
        if not submission_ids:
            return
        with self.write() as conn:
            conn.execute(update(Submission).where(Submission.id.in_(submission_ids), Submission.worker == worker,
                                                  Submission.status == "scoring").values(heartbeat_at=time.time()))

    def finish(self, submission_id: int, worker: str, results: dict, summary: dict) -> bool:
        with self.write() as conn:
            done = conn.execute(update(Submission).where(
                Submission.id == submission_id, Submission.status == "scoring", Submission.worker == worker).values(
                status="done", results=json.dumps(results), summary=json.dumps(summary), error=None,
                finished_at=time.time())).rowcount
        return done == 1

    def fail(self, submission_id: int, worker: str | None, message: str) -> None:
        with self.write() as conn:
            query = update(Submission).where(Submission.id == submission_id,
                                             Submission.status.in_(("pending", "scoring")))
            if worker is not None:
                query = query.where(Submission.worker == worker)
            conn.execute(query.values(status="failed", error=message, finished_at=time.time()))

    def recover_interrupted(self, lease_s: float, now: float | None = None) -> list[int]:
        """Put back to `pending` the submissions whose scoring was interrupted (a crashed or killed process).

        A claim is interrupted when its worker ran on this host and that process is gone, or when its heartbeat is
        older than `lease_s` (a worker on another host died). After MAX_ATTEMPTS interruptions it is failed.
        """
        now = now or time.time()
        host = socket.gethostname()
        with self.read() as conn:
            rows = conn.execute(select(Submission.id, Submission.worker, Submission.heartbeat_at,
                                       Submission.attempts).where(Submission.status == "scoring")).all()
        reset = []
        for row in rows:
            owner_host, _, owner = (row.worker or "").rpartition(":")   # host:pid/nonce
            pid = owner.split("/")[0]
            dead_here = owner_host == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid))
            expired = (row.heartbeat_at or 0) < now - lease_s
            if not (dead_here or expired):
                continue
            with self.write() as conn:
                if row.attempts >= MAX_ATTEMPTS:
                    conn.execute(update(Submission).where(Submission.id == row.id, Submission.status == "scoring")
                                 .values(status="failed", finished_at=now,
                                         error=f"scoring was interrupted {row.attempts} times; not retried"))
                    continue
                n = conn.execute(update(Submission).where(
                    Submission.id == row.id, Submission.status == "scoring", Submission.worker == row.worker).values(
                    status="pending", worker=None, started_at=None, heartbeat_at=None)).rowcount
            if n:
                reset.append(row.id)
        return reset

    # ---------------------------------------------------------------------------------------------- queries

    _COLUMNS = (Submission.id, Team.name.label("team"), Submission.split, Submission.method, Submission.meta,
                Submission.filename, Submission.file_sha256, Submission.file_bytes, Submission.status,
                Submission.error, Submission.results, Submission.summary, Submission.attempts,
                Submission.created_at, Submission.started_at, Submission.finished_at)

    @staticmethod
    def _row(r, with_results: bool) -> SubmissionRow:
        return SubmissionRow(
            r.id, r.team, r.split, r.method, json.loads(r.meta), r.filename, r.file_sha256, r.file_bytes, r.status,
            r.error, json.loads(r.results) if with_results and r.results else None,
            json.loads(r.summary) if r.summary else None, r.attempts, r.created_at, r.started_at, r.finished_at)

    def submission(self, submission_id: int, with_results: bool = True) -> SubmissionRow | None:
        with self.read() as conn:
            r = conn.execute(select(*self._COLUMNS).join(Team, Team.id == Submission.team_id)
                             .where(Submission.id == submission_id)).first()
        return self._row(r, with_results) if r else None

    def submissions(self, status: str | None = None, split: str | None = None, with_results: bool = False
                    ) -> list[SubmissionRow]:
        query = select(*self._COLUMNS).join(Team, Team.id == Submission.team_id)
        if status:
            query = query.where(Submission.status == status)
        if split:
            query = query.where(Submission.split == split)
        with self.read() as conn:
            return [self._row(r, with_results) for r in conn.execute(query.order_by(Submission.id))]

    def latest_scored(self, split: str) -> list[SubmissionRow]:
        """The latest `done` submission of each (team, method) on a split, with its aggregates (for the table)."""
        latest = (select(func.max(Submission.id)).where(Submission.split == split, Submission.status == "done")
                  .group_by(Submission.team_id, Submission.method))
        query = (select(*self._COLUMNS).join(Team, Team.id == Submission.team_id)
                 .where(Submission.id.in_(latest)).order_by(Submission.id))
        with self.read() as conn:
            return [self._row(r, False) for r in conn.execute(query)]


__all__ = ["Database", "LeaderboardError", "SubmissionRow", "TeamInfo", "STATUSES"]
