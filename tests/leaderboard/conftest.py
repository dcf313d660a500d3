"""Fixtures of the leaderboard tests: one synthetic release and baseline predictions for the whole session."""
from __future__ import annotations

from pathlib import Path

import pytest

from reasonseg.baselines.predict import predict_samples
from reasonseg.baselines.registry import MethodContext, get_method
from reasonseg.dataset import load_split
from reasonseg.sample import write_sample_release
from reasonseg.submission import write_predictions

METHODS = ("empty", "full", "center-prior")


@pytest.fixture(scope="session")
def lb_release(tmp_path_factory) -> Path:
    return write_sample_release(tmp_path_factory.mktemp("lb") / "release")


@pytest.fixture(scope="session")
def lb_preds(lb_release, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """method -> split -> predictions JSON of the trivial baselines."""
    out = tmp_path_factory.mktemp("lb-preds")
    paths: dict[str, dict[str, Path]] = {}
    for name in METHODS:
        method = get_method(name).build(MethodContext(lb_release))
        for split in ("val", "test"):
            paths.setdefault(name, {})[split] = write_predictions(
                out / f"{name}-{split}.json", predict_samples(method, load_split(lb_release, split)), split, name)
    return paths


@pytest.fixture
def lb_server(lb_release, tmp_path):
    """An in-process app (TestClient) factory over a fresh SQLite file: make(**settings) -> (client, db, token)."""
    from fastapi.testclient import TestClient

    from reasonseg.leaderboard.app import Settings, create_app
    from reasonseg.leaderboard.db import Database

    clients = []

    def make(**options):
        db_url = options.pop("db_url", str(tmp_path / "lb.db"))
        settings = Settings(data=lb_release, db_url=db_url, cache_dir=None, poll_s=0.05,
                            **{"bootstrap": 200, **options})
        app = create_app(settings)
        db = Database(db_url)
        token = db.add_team(f"team-{len(clients)}")
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client, db, token

    yield make
    for client in clients:
        client.__exit__(None, None, None)
