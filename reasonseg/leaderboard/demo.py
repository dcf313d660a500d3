"""The demo's leaderboard step: serve the release on 127.0.0.1, submit predictions through the client, export the
static page, stop the server."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .app import Settings, serve_in_thread
from .client import submit
from .db import Database
from .render import export_static

DEMO_TEAM = "reasonseg demo"


def demo_step(out: Path, release: Path, predictions: dict[str, dict[str, Path]],
              meta: dict[str, dict[str, str]] | None = None, bootstrap: int = 1000) -> Path:
    """Submit `predictions` (method -> split -> predictions file) to a live local server and export the page.

    `meta` optionally gives each method's metadata fields (e.g. {"center-prior": {"training_data": "..."}}).
    Each method submits as its own team (the board ranks one row per team). The database lives in a temporary
    folder; the exported site in `out` is what remains. Returns its index.html.
    """
    out, release = Path(out), Path(release)
    with tempfile.TemporaryDirectory(prefix="reasonseg-leaderboard-") as tmp:
        db_url = str(Path(tmp) / "leaderboard.db")
        database = Database(db_url)
        tokens = {method: database.add_team(f"{DEMO_TEAM}: {method}") for method in predictions}
        database.dispose()
        n_files = sum(len(by_split) for by_split in predictions.values())
        settings = Settings(data=release, db_url=db_url, bootstrap=bootstrap, daily_limit=max(5, n_files),
                            poll_s=0.2)
        with serve_in_thread(settings) as url:
            for method, by_split in predictions.items():
                for split, path in by_split.items():
                    submit(path, url, tokens[method], split, method, (meta or {}).get(method))
        db = Database(db_url)
        try:
            return export_static(db, out)
        finally:
            db.dispose()
