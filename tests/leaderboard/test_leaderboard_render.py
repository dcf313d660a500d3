"""The table model, the significance mark, the histogram and the static export, on real scored submissions."""
from __future__ import annotations

import json

import pytest

from reasonseg.dataset import load_split
from reasonseg.errors import OutputError
from reasonseg.leaderboard.board import Significance, build_entries
from reasonseg.leaderboard.db import Database
from reasonseg.leaderboard.render import export_static, histogram
from reasonseg.leaderboard.worker import GroundTruthStore, ScoringWorker
from reasonseg.masks import rasterize_shapes
from reasonseg.schema import TARGET
from reasonseg.submission import prediction_from_mask, write_predictions


def _score_all(db: Database, store: GroundTruthStore) -> None:
    worker = ScoringWorker(db, store, threads=1, bootstrap=200)
    while (sub := db.claim_next(worker.identity)) is not None:
        worker.score(sub)


def test_marks_follow_the_paired_bootstrap_and_export_matches_the_server(lb_release, lb_preds, tmp_path):
    oracle = write_predictions(tmp_path / "oracle.json", [
        prediction_from_mask(s.id, 0, rasterize_shapes(s.shapes, s.height, s.width) == TARGET)
        for s in load_split(lb_release, "val")], "val", "oracle")
    db = Database(str(tmp_path / "r.db"))
    for name in ("a", "b", "c"):
        db.add_team(name)
    db.create_submission(1, "val", "oracle", {"oracle": True}, "o.json", oracle.read_bytes())
    db.create_submission(2, "val", "empty", {}, "e.json", lb_preds["empty"]["val"].read_bytes())
    db.create_submission(3, "val", "empty again", {}, "e.json", lb_preds["empty"]["val"].read_bytes())
    db.create_submission(1, "test", "oracle", {"trained_on_val": True}, "t.json",
                         lb_preds["full"]["test"].read_bytes())
    _score_all(db, GroundTruthStore(lb_release, cache_dir=None))
    assert {s.status for s in db.submissions()} == {"done"}

    entries = build_entries({s: db.latest_scored(s) for s in ("val", "test")}, Significance(loader=db.submission))
    measured = {e.method: e for e in entries if not e.reported}
    assert measured["oracle"].value("val", "overall", "giou") > 0.99
    assert not measured["oracle"].marks                         # best in its column: nothing above
    # Far below the oracle: distinguishable, so the first empty entry carries no mark; its twin does.
    empties = sorted([measured["empty"], measured["empty again"]], key=lambda e: e.label)
    marked = [e for e in empties if ("val", "overall", "giou") in e.marks]
    assert len(marked) == 1 and marked[0].marks[("val", "overall", "giou")].delta == 0.0
    assert [b.label for b in measured["oracle"].badges] == ["trained on val", "oracle"]   # val meta + test meta
    assert sum(e.reported for e in entries) == 15

    index = export_static(db, tmp_path / "site")
    html = index.read_text()
    assert html.count('class="mark" title=') == 2          # gIoU and cIoU of the twin
    assert "submissions/1.html" in html and "/api/" not in html and 'href="/submit"' not in html
    doc = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert [r["method"] for r in doc["splits"]["val"] if not r["reported"]][0] == "oracle"
    assert "queries" not in json.dumps(doc) and str(lb_release) not in json.dumps(doc)
    test_page = (tmp_path / "site" / "submissions" / "4.html").read_text()
    assert 'id="histogram"' not in test_page and "aggregates only" in test_page
    assert 'id="histogram"' in (tmp_path / "site" / "submissions" / "1.html").read_text()
    # Exporting again needs overwrite, and replaces only what the export writes: the user's files stay.
    (tmp_path / "site" / "notes.txt").write_text("mine")
    (tmp_path / "site" / "submissions" / "99.html").write_text("stale")
    with pytest.raises(OutputError, match="not empty"):
        export_static(db, tmp_path / "site")
    export_static(db, tmp_path / "site", overwrite=True)
    assert (tmp_path / "site" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "site" / "submissions" / "99.html").exists()
    assert (tmp_path / "site" / "submissions" / "1.html").is_file()


def test_histogram_bins_every_query_once():
    queries = [{"iou": v} for v in (0.0, 0.05, 0.1, 0.55, 0.999, 1.0, 1.00001)] + [{"iou": None}]
    hist = histogram(queries, bins=10)
    counts = [bar["count"] for bar in hist["bars"]]
    assert counts == [2, 1, 0, 0, 0, 1, 0, 0, 0, 3] and hist["total"] == 7
    assert max(bar["h"] for bar in hist["bars"]) == hist["height"] - 20


def test_export_has_a_page_per_team_with_safe_names_and_working_links(lb_release, lb_preds, tmp_path):
    db = Database(str(tmp_path / "t.db"))
    names = ["../../evil <b>x</b>", "Lab X"]
    for name in names:
        db.add_team(name)
    db.create_submission(1, "val", "first", {}, "a.json", lb_preds["empty"]["val"].read_bytes())
    db.create_submission(1, "val", "second", {}, "b.json", lb_preds["full"]["val"].read_bytes())
    db.create_submission(2, "val", "theirs", {}, "c.json", lb_preds["full"]["val"].read_bytes())
    _score_all(db, GroundTruthStore(lb_release, cache_dir=None))
    site = tmp_path / "site"
    index = export_static(db, site).read_text()
    pages = sorted((site / "teams").iterdir())
    assert len(pages) == 2 and all(p.parent == site / "teams" and "/" not in p.name for p in pages)
    assert not (tmp_path / "evil").exists() and "<b>x</b>" not in "".join(p.read_text() for p in pages)
    evil = next(p for p in pages if p.name.startswith("evil-b-x-b"))
    html = evil.read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and html.count('href="../submissions/') == 2
    assert "first" in html and "second" in html and "theirs" not in html
    for sub_id in (1, 2):      # each linked submission page exists and links back to this page
        assert f'href="../teams/{evil.name}"' in (site / "submissions" / f"{sub_id}.html").read_text()
    assert f'href="teams/{evil.name}"' in index
