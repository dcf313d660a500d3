"""The leaderboard's storage: teams, submissions (with their uploaded bytes) and daily quotas, in SQLAlchemy.

SQLite (WAL) is the default; a PostgreSQL URL serves a deployment with several server processes. Every write that
must be atomic per team (taking a quota slot, claiming a submission for scoring) runs in a transaction that first
locks the team's row: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite every write transaction is `BEGIN IMMEDIATE`,
which serialises writers outright. Reads use a second SQLite engine with ordinary deferred transactions, so WAL
readers never wait for a writer.

Tokens are `rsl_<key>_<secret>`: the key finds the team, and only SHA-256 of the secret is stored and compared in
constant time. Uploaded files are stored in the database, so that a worker on another host can score them.

An upload being validated holds one of its team's daily slots in a `holds` row: accepted, the hold becomes the
submission; refused, the slot is given back and the refusal is counted against the team's own daily refusal limit;
left behind by a crashed process, it is released at the next start. Every submission and every admin action is
written to `audit_log`. An SQLite database file is created readable by its owner only (0600).
"""
from __future__ import annotations

import getpass
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

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    inspect,
    make_url,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# LeaderboardError is defined with the other typed errors: the client needs no SQLAlchemy
from ..errors import LeaderboardError, check_plain_text
from ..inputs import check_input
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


class Revocation(Base):
    __tablename__ = "revocations"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    revoked_at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)


class Hold(Base):
    """A daily slot taken by an upload that is being validated (by the process named in `holder`)."""

    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    split: Mapped[str] = mapped_column(String(16))
    day: Mapped[str] = mapped_column(String(10))
    holder: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)


class Refusal(Base):
    __tablename__ = "refusals"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    team_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    submission_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


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
    revoked_at: float | None = None


@dataclass(frozen=True)
class Admission:
    """The answer to an upload asking for a slot: `hold` is set when it may be validated, else `refused` says why."""

    hold: int | None
    refused: str | None = None      # "daily" (no slot left) or "refusals" (too many refused uploads today)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    actor: str
    action: str
    team: str | None
    submission_id: int | None
    detail: str


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
    team_revoked: bool = False


MAX_SUBMISSION_ID = 2**63 - 1   # SQLite's INTEGER; a larger id in a URL is no submission, not an overflow


def admin_actor() -> str:
    try:
        return f"admin:{getpass.getuser()}"
    except (KeyError, OSError):   # no user name for this uid (containers)
        return f"admin:uid {os.getuid()}"


def _sqlite_file(url: str) -> str | None:
    """The file of an SQLite URL (None for memory and `file:` URIs)."""
    database = make_url(url).database
    return None if not database or database == ":memory:" or database.startswith("file:") else database


def _create_private(database: str) -> None:
    """Create an SQLite database file 0600 before SQLite creates it with the umask's mode (its -wal and -shm files
    take the database file's mode). An empty file made beforehand (`touch`) becomes the database: it is made 0600
    too."""
    if os.path.exists(database):
        if os.path.isfile(database) and os.path.getsize(database) == 0:
            os.chmod(database, 0o600)
        return
    os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    os.close(os.open(database, os.O_CREAT | os.O_WRONLY, 0o600))


def _check_existing(database: str, given: str) -> None:
    """A database that must be there already: a missing or empty file is a typo, not a new leaderboard."""
    check_input(database, "leaderboard database", LeaderboardError, "--db")
    if not os.path.isfile(database) or os.path.getsize(database) == 0:
        found = "is a folder" if os.path.isdir(database) else "is empty" if os.path.exists(database) else "not found"
        raise LeaderboardError(f"leaderboard database {found}", path=given,
                               hint="check --db; 'reasonseg leaderboard add-team NAME --db FILE' creates one")


def _owner_gone(owner: str, current: str | None = None) -> bool:
    """Whether `host:pid/nonce` names a process on this host that no longer runs. A restarted server may get its
    predecessor's pid (pid 1 in a container): then the nonce tells them apart, given the `current` identity."""
    owner_host, _, rest = owner.rpartition(":")
    pid = rest.split("/")[0]
    if owner_host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return current is not None and owner != current
    return not pid_alive(int(pid))


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
    """The leaderboard database at `url`. With `create=False` (every command but add-team) it must exist already
    and hold the leaderboard's tables: a typo in --db is an error, not a new, empty leaderboard."""

    def __init__(self, url: str, create: bool = True):
        self.url = normalize_url(url)
        self.sqlite = self.url.startswith("sqlite")
        database = _sqlite_file(self.url) if self.sqlite else None
        if database is not None and create:
            _create_private(database)
        elif database is not None:
            _check_existing(database, url)
        try:
            if self.sqlite:
                self.engine = _sqlite_engine(self.url, immediate=True)
                self.reader = _sqlite_engine(self.url, immediate=False)
            else:
                self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=20)
                self.reader = self.engine
            if not create and not inspect(self.engine).has_table(Team.__tablename__):
                raise LeaderboardError("holds no leaderboard (no teams table)", path=url,
                                       hint="check --db; 'reasonseg leaderboard add-team NAME --db URL' creates one")
            Base.metadata.create_all(self.engine)
        except LeaderboardError:
            self.dispose()
            raise
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

    def add_team(self, name: str, actor: str | None = None) -> str:
        """Create a team and return its token; the token is shown once, only a hash of its secret is kept."""
        name = " ".join(name.split())
        if not name or len(name) > 100:
            raise LeaderboardError("team name must be 1 to 100 characters")
        check_plain_text(name, "team name", error=LeaderboardError)
        key, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.write() as conn:
            if conn.execute(select(Team.id).where(Team.name == name)).first():
                raise LeaderboardError(f"team {name!r} already exists", hint="choose another name")
            team_id = conn.execute(Team.__table__.insert().values(
                name=name, key=key, secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
                created_at=time.time())).inserted_primary_key[0]
            self._audit(conn, actor or admin_actor(), "add-team", int(team_id))
        return f"{TOKEN_PREFIX}_{key}_{secret}"

    def authenticate(self, token: str) -> TeamInfo | None:
        parts = token.split("_", 2)
        key, secret = (parts[1], parts[2]) if len(parts) == 3 and parts[0] == TOKEN_PREFIX else ("", token)
        with self.read() as conn:
            row = conn.execute(select(Team.id, Team.name, Team.secret_sha256, Revocation.revoked_at)
                               .outerjoin(Revocation, Revocation.team_id == Team.id).where(Team.key == key)).first()
        presented = hashlib.sha256(secret.encode()).hexdigest()
        # Compare even when the key is unknown, so both failures take the same time.
        expected = row.secret_sha256 if row else "0" * 64
        if hmac.compare_digest(presented, expected) and row is not None and row.revoked_at is None:
            return TeamInfo(row.id, row.name)
        return None

    def teams(self) -> list[TeamInfo]:
        with self.read() as conn:
            return [TeamInfo(r.id, r.name, r.revoked_at) for r in conn.execute(
                select(Team.id, Team.name, Revocation.revoked_at).outerjoin(Revocation, Revocation.team_id == Team.id)
                .order_by(Team.id))]

    def team(self, name: str) -> TeamInfo:
        """The team called `name` (spaces normalised as `add_team` does)."""
        name = " ".join(name.split())
        with self.read() as conn:
            row = conn.execute(select(Team.id, Team.name, Revocation.revoked_at)
                               .outerjoin(Revocation, Revocation.team_id == Team.id).where(Team.name == name)).first()
        if row is None:
            raise LeaderboardError(f"no team {name!r}", hint="'reasonseg leaderboard teams' lists them")
        return TeamInfo(row.id, row.name, row.revoked_at)

    def rotate_token(self, name: str, actor: str | None = None) -> str:
        """Give a team a new token; the old one is refused from the next request on. Returns the new token."""
        team = self.team(name)
        if team.revoked_at is not None:
            raise LeaderboardError(f"team {team.name!r} is revoked; it gets no new token")
        key, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.write() as conn:
            conn.execute(update(Team).where(Team.id == team.id).values(
                key=key, secret_sha256=hashlib.sha256(secret.encode()).hexdigest()))
            self._audit(conn, actor or admin_actor(), "rotate-token", team.id)
        return f"{TOKEN_PREFIX}_{key}_{secret}"

    def revoke_team(self, name: str, reason: str = "", actor: str | None = None) -> TeamInfo:
        """Refuse the team's token from now on; its submissions stay stored, marked, and off the ranking."""
        team = self.team(name)
        if team.revoked_at is not None:
            raise LeaderboardError(f"team {team.name!r} was already revoked")
        now = time.time()
        with self.write() as conn:
            conn.execute(Revocation.__table__.insert().values(team_id=team.id, revoked_at=now, reason=reason))
            self._audit(conn, actor or admin_actor(), "revoke-team", team.id, detail=reason)
        return TeamInfo(team.id, team.name, now)

    # --------------------------------------------------------------------------------------------------- audit

    @staticmethod
    def _audit(conn: Connection, actor: str, action: str, team_id: int | None = None,
               submission_id: int | None = None, detail: str = "") -> None:
        conn.execute(AuditEntry.__table__.insert().values(at=time.time(), actor=actor[:200], action=action,
                                                           team_id=team_id, submission_id=submission_id,
                                                           detail=detail[:2000]))

    def audit(self, actor: str, action: str, team_id: int | None = None, submission_id: int | None = None,
              detail: str = "") -> None:
        with self.write() as conn:
            self._audit(conn, actor, action, team_id, submission_id, detail)

    def audit_log(self, team: str | None = None, limit: int = 100) -> list[AuditRow]:
        """The latest `limit` audit entries, oldest first (only `team`'s when given)."""
        query = select(AuditEntry.id, AuditEntry.at, AuditEntry.actor, AuditEntry.action, Team.name.label("team"),
                       AuditEntry.submission_id, AuditEntry.detail).outerjoin(Team, Team.id == AuditEntry.team_id)
        if team is not None:
            query = query.where(AuditEntry.team_id == self.team(team).id)
        with self.read() as conn:
            rows = conn.execute(query.order_by(AuditEntry.id.desc()).limit(limit)).all()
        return [AuditRow(r.id, r.at, r.actor, r.action, r.team, r.submission_id, r.detail) for r in reversed(rows)]

    # ------------------------------------------------------------------------------------------------ quotas

    def admit(self, team_id: int, split: str, daily_limit: int, refused_limit: int, holder: str,
              now: float | None = None) -> Admission:
        """Take one of today's `daily_limit` slots for (team, split) and hold it for an upload being validated.

        Refused when the slots are used up, or when the team has had `refused_limit` uploads refused today (all
        splits together): a refused upload gives its slot back, so without this second limit it could be repeated
        without end.
        """
        now = now or time.time()
        day = utc_day(now)
        with self.write() as conn:
            self._lock_team(conn, team_id)
            refused = conn.execute(select(Refusal.used).where(Refusal.team_id == team_id, Refusal.day == day)).scalar()
            if (refused or 0) >= refused_limit:
                return Admission(None, "refusals")
            used = conn.execute(select(Quota.used).where(Quota.team_id == team_id, Quota.split == split,
                                                         Quota.day == day)).scalar()
            if (used or 0) >= daily_limit:
                return Admission(None, "daily")
            if used is None:
                conn.execute(Quota.__table__.insert().values(team_id=team_id, split=split, day=day, used=1))
            else:
                conn.execute(update(Quota).where(Quota.team_id == team_id, Quota.split == split, Quota.day == day)
                             .values(used=Quota.used + 1))
            hold = conn.execute(Hold.__table__.insert().values(team_id=team_id, split=split, day=day, holder=holder,
                                                               created_at=now)).inserted_primary_key[0]
        return Admission(int(hold))

    def usage_today(self, team_id: int, now: float | None = None) -> tuple[int, dict[str, int]]:
        """(uploads refused today, {split: slots used today}) of a team, read only: the server turns a team away
        with these before it reads an upload's body; `admit` decides again, atomically, once the form is read."""
        day = utc_day(now or time.time())
        with self.read() as conn:
            refused = conn.execute(select(Refusal.used).where(Refusal.team_id == team_id, Refusal.day == day)).scalar()
            used = conn.execute(select(Quota.split, Quota.used).where(Quota.team_id == team_id, Quota.day == day))
            return refused or 0, {row.split: row.used for row in used}

    def refuse(self, hold_id: int, error: str, actor: str, now: float | None = None) -> None:
        """The held upload was refused: its slot goes back, and one refusal is counted for today."""
        with self.write() as conn:
            hold = conn.execute(select(Hold).where(Hold.id == hold_id)).first()
            if hold is not None:
                self._release(conn, hold, now or time.time())
                self._audit(conn, actor, "refused", hold.team_id, detail=error)

    def refuse_fields(self, team_id: int, error: str, actor: str, now: float | None = None) -> None:
        """An upload refused for its form fields, before any slot was held: one refusal counted for today."""
        with self.write() as conn:
            self._lock_team(conn, team_id)
            self._count_refusal(conn, team_id, now or time.time())
            self._audit(conn, actor, "refused", team_id, detail=error)

    def _release(self, conn: Connection, hold, now: float) -> None:
        self._lock_team(conn, hold.team_id)
        conn.execute(update(Quota).where(Quota.team_id == hold.team_id, Quota.split == hold.split,
                                         Quota.day == hold.day, Quota.used > 0).values(used=Quota.used - 1))
        self._count_refusal(conn, hold.team_id, now)
        conn.execute(delete(Hold).where(Hold.id == hold.id))

    @staticmethod
    def _count_refusal(conn: Connection, team_id: int, now: float) -> None:
        day = utc_day(now)
        counted = conn.execute(update(Refusal).where(Refusal.team_id == team_id, Refusal.day == day)
                               .values(used=Refusal.used + 1)).rowcount
        if not counted:
            conn.execute(Refusal.__table__.insert().values(team_id=team_id, day=day, used=1))

    def release_interrupted_holds(self, stale_s: float = 3600.0, now: float | None = None,
                                  current: str | None = None) -> list[int]:
        """Give back the slots held by uploads whose validation never ended (the process crashed or was killed).

        A hold is left behind when its process ran on this host and is gone, or when it is older than `stale_s`
        (a process on another host). Its slot is returned and it counts as a refusal: a file that crashes the
        validator must not be free to send again and again.
        """
        now = now or time.time()
        with self.read() as conn:
            holds = conn.execute(select(Hold)).all()
        released = []
        for hold in holds:
            if not (_owner_gone(hold.holder, current) or hold.created_at < now - stale_s):
                continue
            with self.write() as conn:
                if conn.execute(select(Hold.id).where(Hold.id == hold.id)).first() is None:
                    continue    # another process released it first
                self._release(conn, hold, now)
                self._audit(conn, f"server:{socket.gethostname()}:{os.getpid()}", "upload-interrupted",
                            hold.team_id, detail=f"validation of a {hold.split} upload by {hold.holder} never "
                                                 "ended; its slot was given back")
            released.append(hold.id)
        return released

    # ------------------------------------------------------------------------------------------- submissions

    def create_submission(self, team_id: int, split: str, method: str, meta: dict, filename: str, data: bytes,
                          hold: int | None = None, actor: str | None = None) -> int:
        """Store an accepted upload as `pending` (turning its `hold` into the submission); durable before anyone
        scores it."""
        with self.write() as conn:
            result = conn.execute(Submission.__table__.insert().values(
                team_id=team_id, split=split, method=method, meta=json.dumps(meta, sort_keys=True),
                filename=filename, file_sha256="sha256:" + hashlib.sha256(data).hexdigest(), file_bytes=len(data),
                status="pending", attempts=0, created_at=time.time()))
            sid = int(result.inserted_primary_key[0])
            conn.execute(Upload.__table__.insert().values(submission_id=sid, data=data))
            if hold is not None:
                conn.execute(delete(Hold).where(Hold.id == hold))
            self._audit(conn, actor or "team", "submitted", team_id, sid,
                        f"{split} {method!r} {filename} {len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()}")
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

    def recover_interrupted(self, lease_s: float, now: float | None = None, current: str | None = None) -> list[int]:
        """Put back to `pending` the submissions whose scoring was interrupted (a crashed or killed process).

        A claim is interrupted when its worker ran on this host and that process is gone, or when its heartbeat is
        older than `lease_s` (a worker on another host died). After MAX_ATTEMPTS interruptions it is failed.
        """
        now = now or time.time()
        with self.read() as conn:
            rows = conn.execute(select(Submission.id, Submission.worker, Submission.heartbeat_at,
                                       Submission.attempts).where(Submission.status == "scoring")).all()
        reset = []
        for row in rows:
            expired = (row.heartbeat_at or 0) < now - lease_s
            if not (_owner_gone(row.worker or "", current) or expired):
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
                Submission.created_at, Submission.started_at, Submission.finished_at, Revocation.revoked_at)

    @classmethod
    def _select(cls):
        return (select(*cls._COLUMNS).join(Team, Team.id == Submission.team_id)
                .outerjoin(Revocation, Revocation.team_id == Submission.team_id))

    @staticmethod
    def _row(r, with_results: bool) -> SubmissionRow:
        return SubmissionRow(
            r.id, r.team, r.split, r.method, json.loads(r.meta), r.filename, r.file_sha256, r.file_bytes, r.status,
            r.error, json.loads(r.results) if with_results and r.results else None,
            json.loads(r.summary) if r.summary else None, r.attempts, r.created_at, r.started_at, r.finished_at,
            r.revoked_at is not None)

    def submission(self, submission_id: int, with_results: bool = True) -> SubmissionRow | None:
        if not 0 < submission_id <= MAX_SUBMISSION_ID:
            return None
        with self.read() as conn:
            r = conn.execute(self._select().where(Submission.id == submission_id)).first()
        return self._row(r, with_results) if r else None

    def submissions(self, status: str | None = None, split: str | None = None, with_results: bool = False,
                    team: str | None = None) -> list[SubmissionRow]:
        """Every stored submission (of one `team` when given), oldest first."""
        query = self._select()
        if status:
            query = query.where(Submission.status == status)
        if split:
            query = query.where(Submission.split == split)
        if team is not None:
            query = query.where(Submission.team_id == self.team(team).id)
        with self.read() as conn:
            return [self._row(r, with_results) for r in conn.execute(query.order_by(Submission.id))]

    def latest_scored(self, split: str) -> list[SubmissionRow]:
        """The latest `done` submission of each (team, method) on a split, with its aggregates (for the table);
        revoked teams' submissions are kept but not ranked."""
        latest = (select(func.max(Submission.id)).where(Submission.split == split, Submission.status == "done")
                  .group_by(Submission.team_id, Submission.method))
        query = (self._select().where(Submission.id.in_(latest), Revocation.revoked_at.is_(None))
                 .order_by(Submission.id))
        with self.read() as conn:
            return [self._row(r, False) for r in conn.execute(query)]


__all__ = ["Admission", "AuditRow", "Database", "LeaderboardError", "SubmissionRow", "TeamInfo", "STATUSES"]
