"""The `leaderboard` commands (serve, add-team, rotate-token, revoke-team, teams, audit, export) and the top-level
`submit`."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import typer

from ..sandbox import DEFAULT_CPU_S, DEFAULT_MEMORY_MIB, DEFAULT_WALL_S

leaderboard_app = typer.Typer(no_args_is_help=True,
                              help="The ReasonSeg leaderboard: a submission server with hidden test ground truth.")

@leaderboard_app.callback()
def _needs_serve_extra() -> None:
    """The ReasonSeg leaderboard: a submission server with hidden test ground truth."""
    from ..extras import require_extra

    require_extra("serve", "reasonseg leaderboard")


DbOpt = typer.Option("leaderboard.db", "--db",
                     help="database: an SQLite file path, sqlite:///FILE, or postgresql://USER@HOST/DB")


@leaderboard_app.command("serve")
def serve(data: Path = typer.Option(..., "--data", help="release folder with val/ and test/ (ground truth)"),
          db: str = DbOpt,
          host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8000, help="port to listen on"),
          daily_limit: int = typer.Option(5, "--daily-limit", help="submissions per team, per split, per UTC day"),
          refused_limit: int = typer.Option(20, "--refused-limit",
                                            help="refused uploads per team per UTC day (all splits) before the "
                                                 "server stops reading its uploads until midnight"),
          max_upload_mb: int = typer.Option(256, "--max-upload-mb", help="largest accepted upload, in MiB"),
          bootstrap: int = typer.Option(1000, help="bootstrap resamples for each submission's intervals"),
          threads: int = typer.Option(2, help="scoring threads in this process"),
          lease: float = typer.Option(60.0, help="seconds without a heartbeat before another worker takes over"),
          no_cache: bool = typer.Option(False, "--no-cache", help="build ground truth afresh, ignore the disk cache"),
          reread: bool = typer.Option(False, "--reread-ground-truth",
                                      help="re-read ground truth for every submission (the benchmark's baseline)"),
          worker_memory_mb: int = typer.Option(DEFAULT_MEMORY_MIB, "--worker-memory-mb", min=16,
                                               help="memory one upload's sandboxed reader may add, in MiB"),
          worker_cpu_s: int = typer.Option(DEFAULT_CPU_S, "--worker-cpu-s", min=1,
                                           help="CPU seconds one upload's reader (or scorer) may use"),
          worker_wall_s: float = typer.Option(DEFAULT_WALL_S, "--worker-wall-s", min=1.0,
                                              help="seconds before one upload's reader (or scorer) is killed")):
    """Run the leaderboard server: API, page, upload form and background scoring.

    Example: reasonseg leaderboard serve --data ReasonSeg/ --db leaderboard.db --port 8000
    """
    from ..inputs import check_input
    from ..leaderboard.app import Settings
    from ..leaderboard.app import serve as run_server
    from ..leaderboard.db import Database

    check_input(data, "release folder", field="--data")
    Database(db, create=False).dispose()     # a typo in --db is an error, not a new, empty leaderboard
    settings = Settings(data=data, db_url=db, bootstrap=bootstrap, daily_limit=daily_limit, refused_limit=refused_limit,
                        max_upload_bytes=max_upload_mb * 1024 * 1024, threads=threads, lease_s=lease,
                        reread_ground_truth=reread, cache_dir=None if no_cache else "default",
                        worker_memory_mib=worker_memory_mb, worker_cpu_s=worker_cpu_s, worker_wall_s=worker_wall_s)
    # Said once the data and the database are read: a bad --data is one error line, with nothing before it.
    run_server(settings, host=host, port=port,
               announce=lambda: typer.echo(f"serving {data} on http://{host}:{port}/ (database {db})", err=True))


@leaderboard_app.command("add-team")
def add_team(name: str = typer.Argument(..., help="team name shown on the leaderboard"), db: str = DbOpt):
    """Create a team and print its token once (only a hash is stored; rotate-token replaces a lost one).

    The one command that creates the database when --db names a new file (readable by its owner only, 0600).

    Example: reasonseg leaderboard add-team "DV Lab" --db leaderboard.db
    """
    from ..leaderboard.db import Database

    token = Database(db).add_team(name)
    typer.echo(token)


@leaderboard_app.command("rotate-token")
def rotate_token(name: str = typer.Argument(..., help="team name"), db: str = DbOpt):
    """Give a team a new token and print it once; the old token is refused from the next request on.

    Example: reasonseg leaderboard rotate-token "DV Lab" --db leaderboard.db
    """
    from ..leaderboard.db import Database

    typer.echo(Database(db, create=False).rotate_token(name))


@leaderboard_app.command("revoke-team")
def revoke_team(name: str = typer.Argument(..., help="team name"), db: str = DbOpt,
                reason: str = typer.Option("", "--reason", help="why, kept in the audit log")):
    """Refuse a team's token from now on; its submissions stay stored and viewable, marked, and leave the ranking.

    Example: reasonseg leaderboard revoke-team "DV Lab" --db leaderboard.db --reason "shared test labels"
    """
    from ..leaderboard.db import Database
    from ..text import quoted

    team = Database(db, create=False).revoke_team(name, reason)
    typer.echo(f"team {quoted(team.name)} revoked; its submissions are kept and no longer ranked")


@leaderboard_app.command("teams")
def teams(db: str = DbOpt):
    """List the teams, their submission counts and whether they are revoked.

    Example: reasonseg leaderboard teams --db leaderboard.db
    """
    from ..leaderboard.db import Database
    from .common import print_table

    database = Database(db, create=False)
    counts: dict[str, int] = {}
    for sub in database.submissions():
        counts[sub.team] = counts.get(sub.team, 0) + 1
    rows = [[team.name, str(counts.get(team.name, 0)), "revoked" if team.revoked_at else "active"]
            for team in database.teams()]
    print_table(["team", "submissions", "status"], rows, title="teams")


@leaderboard_app.command("audit")
def audit(db: str = DbOpt, team: str | None = typer.Option(None, "--team", help="only this team's entries"),
          limit: int = typer.Option(100, "--limit", help="how many of the latest entries")):
    """Print the audit log: teams added, tokens rotated, teams revoked, uploads accepted, refused or interrupted.

    Example: reasonseg leaderboard audit --db leaderboard.db --team "DV Lab"
    """
    from ..leaderboard.db import Database
    from ..leaderboard.render import when
    from ..text import display_line

    # One tab-separated line per entry (not a table that truncates): an audit log is read whole and grepped. Names
    # and details are shown escaped (no terminal escapes, no bidi) and capped, as every error line is.
    entries = Database(db, create=False).audit_log(team, limit)
    typer.echo("when\twho\taction\tteam\tsubmission\tdetail")
    for r in entries:
        fields = [when(r.at), r.actor, r.action, r.team or "", "" if r.submission_id is None else str(r.submission_id),
                  r.detail]
        typer.echo("\t".join(display_line(f) for f in fields))


@leaderboard_app.command("export")
def export(db: str = DbOpt, out: Path = typer.Option(..., "--out", help="folder to write the static site into"),
           overwrite: bool = typer.Option(False, "--overwrite", help="replace the site in a non-empty --out (files "
                                          "the export does not write, such as .git, are kept)")):
    """Write the leaderboard as static HTML + JSON (index.html, submissions/, leaderboard.json), no server needed.

    Example: reasonseg leaderboard export --db leaderboard.db --out site/
    """
    from ..leaderboard.db import Database
    from ..leaderboard.render import export_static

    index = export_static(Database(db, create=False), out, overwrite=overwrite)
    typer.echo(f"static leaderboard: {index}")


def submit(file: Path = typer.Argument(..., help="predictions JSON, PNG zip, or a folder of PNGs"),
           server: str = typer.Option(..., "--server", help="leaderboard URL, e.g. http://127.0.0.1:8000"),
           token: str = typer.Option(..., "--token", envvar="REASONSEG_TOKEN",
                                     help="team token (or the REASONSEG_TOKEN environment variable)"),
           split: str | None = typer.Option(None, "--split", help="val or test [default: the file's split, else "
                                                                   "test]"),
           method: str | None = typer.Option(None, "--method", help="method name (default: the file's)"),
           meta: list[str] = typer.Option([], "--meta", help="metadata key=value, repeatable: model_size, "
                                          "base_model, training_data, trained_on_val, checkpoint_selected_on, "
                                          "prompt_mode, paper_url, code_url, oracle, notes"),
           no_wait: bool = typer.Option(False, "--no-wait", help="return once uploaded, without waiting for the score"),
           timeout: float = typer.Option(600.0, help="seconds to wait for the score"),
           trusted: bool = typer.Option(False, "--trusted", help="check the file in this process, without the "
                                        "sandbox's memory, CPU and time limits (trusted local files only)")):
    """Validate predictions locally, upload them to a leaderboard, wait for the score and print the row.

    Example: reasonseg submit preds.json --server http://127.0.0.1:8000 --token rsl_... --method my-model
    """
    from ..leaderboard.client import parse_meta
    from ..leaderboard.client import submit as run_submit
    from ..metrics.report import split_table
    from ..sandbox import LIMITED, TRUSTED
    from .common import print_table, progress

    fields = parse_meta(meta)
    with ExitStack() as stack:
        sub = run_submit(file, server, token, split, method, fields, wait=not no_wait, timeout=timeout,
                         progress_total=lambda total: stack.enter_context(progress("uploading", total, unit="bytes")),
                         limits=TRUSTED if trusted else LIMITED)
    url = f"{server.rstrip('/')}/submissions/{sub['id']}"
    if no_wait:
        typer.echo(f"submission {sub['id']} is {sub['status']}: {url}")
        return
    header, rows = split_table(sub["results"])
    print_table(header, rows, title=f"{sub['method']} · {sub['split']} · submission {sub['id']} (×100)")
    typer.echo(url)


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app (and to `reasonseg build` where they build data)."""
    app.add_typer(leaderboard_app, name="leaderboard")
    app.command("submit")(submit)
