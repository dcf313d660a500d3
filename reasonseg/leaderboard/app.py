"""The leaderboard server: a FastAPI app over the database, the ground truth kept in memory, and the scoring worker.

Routes: POST /api/submissions, GET /api/submissions/{id}, GET /api/teams/{team}/submissions,
GET /api/leaderboard?split=, GET /api/health, GET / (the table), GET /submissions/{id} (a submission's page),
GET /teams/{team} (every submission of a team), GET /submit (the upload form). Nothing serves files from disk, and
test submissions leave the server as rounded aggregates only. Every error is `{"error": "<one line>"}`, an
unexpected one included.

An upload's cost is bounded before any heavy work: the token, the team's state (refusal and daily limits) and the
declared Content-Length are checked before a byte of the body is read; the body is counted as it streams in; a
daily slot is held before the file is read; cheap pre-scans refuse floods from counts alone. The file itself is
parsed, decoded, checked and scored only in a sandboxed child process (`reasonseg.sandbox`) under memory, CPU and
wall-clock limits, never in this process, so the server answers while any upload is read. A team's uploads are
read one at a time, and at most `validations` at once in all.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import ReasonSegError
from ..sandbox import DEFAULT_CPU_S, DEFAULT_MEMORY_MIB, DEFAULT_WALL_S, Sandbox, SandboxLimits
from ..submission import Limits
from ..text import display_line, quoted
from .board import RANKING_RULE, Significance, build_entries, split_rows
from .db import MAX_SUBMISSION_ID, Database, LeaderboardError, SubmissionRow, TeamInfo
from .intake import FORM_FIELDS, IntakeError, check_fields, precheck_upload, safe_filename
from .render import Links, render_index, render_submission, render_submit, render_team
from .worker import SERVED_SPLITS, GroundTruthStore, ScoringWorker, public_aggregates, public_results

FORM_OVERHEAD_BYTES = 64 * 1024    # room for the text fields and multipart headers beside the file
DEFAULT_MAX_UPLOAD_MB = 256
LOG = logging.getLogger("reasonseg.leaderboard")


@dataclass
class Settings:
    data: Path
    db_url: str
    bootstrap: int = 1000
    daily_limit: int = 5
    refused_limit: int = 20          # refused uploads per team per UTC day, all splits together
    validations: int = 4             # uploads read and validated at the same time (one per team)
    worker_memory_mib: int = DEFAULT_MEMORY_MIB   # what reading one upload may add, in its sandboxed child
    worker_cpu_s: int = DEFAULT_CPU_S             # CPU seconds one upload's child may use (reading, or scoring)
    worker_wall_s: float = DEFAULT_WALL_S         # wall-clock seconds before the child is killed
    worker_trusted: bool = False     # the benchmark's baseline only: uploads read in this process, without limits
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    threads: int = 2
    lease_s: float = 60.0
    poll_s: float = 1.0
    reread_ground_truth: bool = False
    cache_dir: str | os.PathLike | None = "default"
    start_worker: bool = True


class UploadTooLarge(Exception):
    pass


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": display_line(message)}, status_code=status, headers=headers)


def _limited(receive, limit: int):
    """Wrap the ASGI receive so that the body is counted as it streams in, and refused past `limit` bytes."""
    seen = 0

    async def counted():
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge(seen)
        return message

    return counted


def _seconds_to_utc_midnight() -> int:
    now = datetime.now(timezone.utc)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()))


def submission_json(sub: SubmissionRow) -> dict:
    """What the API says about a submission: per-query rows only for val, aggregates only for test."""
    results = None
    if sub.status == "done":
        results = public_results(sub.results, with_queries=True) if sub.split == "val" and sub.results \
            else public_aggregates(sub)
    return {"id": sub.id, "url": f"/submissions/{sub.id}", "team": sub.team, "team_revoked": sub.team_revoked,
            "split": sub.split,
            "method": sub.method, "meta": sub.meta, "status": sub.status, "error": sub.error,
            "filename": sub.filename, "file_sha256": sub.file_sha256, "file_bytes": sub.file_bytes,
            "created_at": sub.created_at, "started_at": sub.started_at, "finished_at": sub.finished_at,
            "results": results}


def create_app(settings: Settings) -> FastAPI:
    """Open the database, load each split's ground truth once, and build the app (the worker starts with it)."""
    db = Database(settings.db_url)
    store = GroundTruthStore(settings.data, cache_dir=settings.cache_dir, reread=settings.reread_ground_truth)
    limits = Limits(max_file_bytes=settings.max_upload_bytes)
    sandbox_limits = SandboxLimits(settings.worker_memory_mib, settings.worker_cpu_s, settings.worker_wall_s,
                                   trusted=settings.worker_trusted)
    # Two pools: children kept warm for uploads (a team waits on them), and for scoring (in the background), so
    # that scoring never takes the child the next upload would have found ready.
    sandbox = Sandbox(sandbox_limits, warm=2)
    worker = ScoringWorker(db, store, threads=settings.threads, bootstrap=settings.bootstrap,
                           lease_s=settings.lease_s, poll_s=settings.poll_s, limits=limits,
                           sandbox=Sandbox(sandbox_limits, warm=1))
    significance = Significance(loader=db.submission)
    validation_slots = asyncio.Semaphore(max(1, settings.validations))
    team_turns: dict[int, asyncio.Lock] = {}     # one upload of a team read at a time: a team cannot fill the slots

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.start_worker:
            await run_in_threadpool(worker.start)
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)
            sandbox.close()
            worker.sandbox.close()
            store.close()
            db.dispose()

    app = FastAPI(title="ReasonSeg leaderboard", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.db, app.state.store, app.state.worker, app.state.settings = db, store, worker, settings

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return _error(exc.status_code, detail if exc.status_code != 404 else "not found",
                      getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception):
        LOG.error("unexpected error", exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); the maintainers have the details in the "
                           "server log")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("path", "query", "body"))
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    def _authenticate(request: Request) -> TeamInfo | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return db.authenticate(token.strip())

    # -------------------------------------------------------------------------------------------------- API

    @app.post("/api/submissions", status_code=201)
    async def post_submission(request: Request):
        """Upload predictions (multipart: file, split, method, metadata) with `Authorization: Bearer <token>`."""
        team = await run_in_threadpool(_authenticate, request)
        if team is None:
            return _error(401, "missing or invalid team token: send 'Authorization: Bearer <token>' "
                               "(a token comes from 'reasonseg leaderboard add-team')",
                          {"WWW-Authenticate": "Bearer"})
        # The team's state before a byte of the body is read: a team that will be turned away costs nothing.
        turned_away = await run_in_threadpool(_turned_away, team, request.query_params.get("split"))
        if turned_away is not None:
            return turned_away
        body_limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > body_limit:
            return _error(413, f"upload is {int(declared)} bytes; the limit is {settings.max_upload_bytes} bytes "
                               "(use JSON RLE, which is far smaller than PNGs)")
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return _error(415, "send multipart/form-data with a 'file' part and the fields split and method")
        limited = Request(request.scope, receive=_limited(request.receive, body_limit))
        try:
            form = await limited.form(max_files=1, max_fields=len(FORM_FIELDS) + 4, max_part_size=64 * 1024)
        except UploadTooLarge:
            return _error(413, f"upload is over the {settings.max_upload_bytes} byte limit "
                               "(use JSON RLE, which is far smaller than PNGs)")
        except HTTPException as exc:
            return _error(400, f"malformed multipart form: {exc.detail}")
        except ClientDisconnect:    # the client went away mid-body: nothing to answer, one line for the operator
            LOG.warning("upload by team %s dropped: the client disconnected before the body ended",
                        quoted(team.name))
            return _error(400, "upload interrupted")
        try:
            return await _accept(team, form, request.query_params.get("split"))
        finally:
            await form.close()

    def _quota_refusal(team: TeamInfo, refused: str, split: str) -> JSONResponse:
        retry = {"Retry-After": str(_seconds_to_utc_midnight())}
        if refused == "refusals":
            return _error(429, f"team {team.name!r} has had {settings.refused_limit} uploads refused today (UTC); "
                               "check files with 'reasonseg validate' or 'reasonseg score' on val before submitting, "
                               "and try again tomorrow", retry)
        return _error(429, f"team {team.name!r} has used its {settings.daily_limit} {split} submissions for today "
                           "(UTC); try again tomorrow", retry)

    def _turned_away(team: TeamInfo, split: str | None) -> JSONResponse | None:
        """429 when the team cannot be admitted whatever the body holds: over its refusal limit, or out of slots on
        the split named in the query (`?split=`), or on every split when none is named. `db.admit` decides again,
        atomically, once the form is read."""
        refusals, used = db.usage_today(team.id)
        if refusals >= settings.refused_limit:
            return _quota_refusal(team, "refusals", "")
        splits = [split] if split in store.splits else list(store.splits)
        if all(used.get(s, 0) >= settings.daily_limit for s in splits):
            return _quota_refusal(team, "daily", " or ".join(splits))
        return None

    async def _accept(team: TeamInfo, form, query_split: str | None) -> JSONResponse:
        fields: dict[str, str] = {}
        upload = None
        for key, value in form.multi_items():
            if key in fields or (key == "file" and upload is not None):
                return _error(400, f"field {key[:40]!r} was sent more than once")
            if isinstance(value, UploadFile):
                if key != "file":
                    return _error(400, f"unexpected file in field {key[:40]!r}; send the predictions as 'file'")
                upload = value
            else:
                fields[key] = value
        if upload is None:
            return _error(400, "no 'file' part: attach the predictions JSON or PNG zip as 'file'")
        actor = f"team:{team.name}"
        try:
            split, method, meta = check_fields(fields, store.splits)
            if query_split and query_split != split:
                raise IntakeError(f"is {split!r} but the address names split {query_split[:20]!r}", field="split")
        except IntakeError as exc:   # refused like a bad file: counted against the team's refusals, audited
            await run_in_threadpool(db.refuse_fields, team.id, exc.render(), actor)
            return _error(400, exc.render())
        admission = await run_in_threadpool(db.admit, team.id, split, settings.daily_limit, settings.refused_limit,
                                            worker.identity)
        if admission.refused:
            return _quota_refusal(team, admission.refused, split)
        filename = safe_filename(upload.filename)
        try:
            async with team_turns.setdefault(team.id, asyncio.Lock()), validation_slots:
                # Cheap early refusals first, on the spooled file in chunks: a flood is refused unread.
                await run_in_threadpool(precheck_upload, upload.file, filename, store.index(split))
                data = await upload.read()
                if len(data) > settings.max_upload_bytes:
                    raise IntakeError(f"file is {len(data)} bytes; the limit is {settings.max_upload_bytes} bytes")
                await run_in_threadpool(_validated, data, filename, split)
            sid = await run_in_threadpool(db.create_submission, team.id, split, method, meta, filename, data,
                                          admission.hold, actor)
        except ReasonSegError as exc:   # the file's own error, or a sandbox limit it breached: counted, audited
            message = display_line(exc.render())
            await run_in_threadpool(db.refuse, admission.hold, message, actor)
            return _error(400, message)
        except Exception as exc:  # the validator failed on this file: refuse it (and count it), never a bare 500
            LOG.error("validating an upload by %s failed", team.name, exc_info=exc)
            message = (f"{filename}: the file could not be validated ({type(exc).__name__}); the maintainers have "
                       "the details in the server log")
            await run_in_threadpool(db.refuse, admission.hold, message, actor)
            return _error(400, message)
        except BaseException:   # cancelled (the client went away): the held slot must not stay taken
            db.refuse(admission.hold, f"{filename}: upload abandoned while it was validated", actor)
            raise
        worker.wake()
        body = {"id": sid, "status": "pending", "url": f"/submissions/{sid}", "split": split, "method": method,
                "team": team.name, "results": None}
        return JSONResponse(body, status_code=201, headers={"Location": f"/api/submissions/{sid}"})

    def _validated(data: bytes, filename: str, split: str) -> dict:
        """The upload read, checked against the split and matched to its queries, in a sandboxed child."""
        return sandbox.run("check_upload", {"where": filename, "limits": limits, "gt": store.sandbox_source(split)},
                           data, where=filename, honest=lambda: store.honest_cost(split, sandbox, limits))

    @app.get("/api/submissions/{submission_id}")
    def get_submission(submission_id: int):
        sub = db.submission(submission_id) if 0 < submission_id <= MAX_SUBMISSION_ID else None
        if sub is None:
            return _error(404, f"no submission {submission_id}")
        return submission_json(sub)

    def _entries(with_marks: bool = True):
        scored = {split: db.latest_scored(split) for split in SERVED_SPLITS}
        return build_entries(scored, significance if with_marks else None)

    @app.get("/api/leaderboard")
    def get_leaderboard(split: str = "test", reported: bool = True):
        if split not in SERVED_SPLITS:
            return _error(400, f"split must be one of {', '.join(SERVED_SPLITS)}, got {split[:20]!r}")
        rows = [r for r in split_rows(_entries(), split) if reported or not r["reported"]]
        return {"format": "reasonseg-leaderboard", "version": 1, "split": split, "protocol": "lisa",
                "ranking": RANKING_RULE, "rows": rows}

    def _team_submissions(team: str) -> list[SubmissionRow] | None:
        try:
            return db.submissions(team=team[:200])
        except LeaderboardError:
            return None

    @app.get("/api/teams/{team}/submissions")
    def get_team_submissions(team: str):
        """Every submission of a team, oldest first, as GET /api/submissions/{id} describes each."""
        subs = _team_submissions(team)
        if subs is None:
            return _error(404, f"no team {team[:100]!r}")
        return {"team": team, "submissions": [submission_json(sub) for sub in subs]}

    @app.get("/api/health")
    def health():
        pending = len(db.submissions(status="pending")) + len(db.submissions(status="scoring"))
        return {"ok": True, "splits": list(store.splits), "waiting": pending, "time": time.time()}

    # ------------------------------------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    def index_page():
        return HTMLResponse(render_index(_entries(), Links(static=False)))

    @app.get("/submissions/{submission_id}", response_class=HTMLResponse)
    def submission_page(submission_id: int):
        sub = db.submission(submission_id) if 0 < submission_id <= MAX_SUBMISSION_ID else None
        if sub is None:
            return HTMLResponse("<!doctype html><title>not found</title><p>No such submission.</p>", status_code=404)
        return HTMLResponse(render_submission(sub, Links(static=False)))

    @app.get("/teams/{team}", response_class=HTMLResponse)
    def team_page(team: str):
        subs = _team_submissions(team)
        if subs is None:
            return HTMLResponse("<!doctype html><title>not found</title><p>No such team.</p>", status_code=404)
        return HTMLResponse(render_team(team, subs, Links(static=False)))

    @app.get("/submit", response_class=HTMLResponse)
    def submit_page():
        return HTMLResponse(render_submit(store.splits, settings.max_upload_bytes, settings.daily_limit))

    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, sock=None, announce=None) -> None:
    """Run the app with uvicorn until interrupted (`reasonseg leaderboard serve`); `announce()` is called once the
    app is built (database open, ground truth read), so that nothing is said about a server that cannot start."""
    import uvicorn

    app = create_app(settings)
    if announce is not None:
        announce()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock is not None else None)


@contextmanager
def serve_in_thread(settings: Settings, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """A real server on `host` in a background thread for the duration of the block; yields its base URL."""
    import socket

    import uvicorn

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="reasonseg-leaderboard",
                              daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise LeaderboardError("the leaderboard server did not start", hint="see the log above")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


__all__ = ["Settings", "create_app", "serve", "serve_in_thread", "submission_json"]
