import json

import pytest

from reasonseg.errors import ResultsError
from reasonseg.metrics.iou import QueryScore
from reasonseg.metrics.report import (
    format_metric,
    group_scores,
    read_results,
    results_document,
    scores_from_results,
    split_table,
    summarize,
    table1,
    write_results,
)

SCORES = [QueryScore("a", 0, False, 5, 10, "openimages"), QueryScore("b", 0, True, 0, 0, "scannet"),
          QueryScore("c", 0, True, 9, 10, "openimages")]


def test_groups_split_short_long_and_sources():
    groups = group_scores(SCORES)
    assert [s.id for s in groups["short"]] == ["a"]
    assert [s.id for s in groups["long"]] == ["b", "c"]
    assert [s.id for s in groups["source:openimages"]] == ["a", "c"]
    assert set(groups) == {"overall", "short", "long", "source:openimages", "source:scannet"}


def test_summary_values_and_unknown_policy():
    rows = summarize(SCORES, bootstrap=0)
    assert rows["overall"]["n"] == 3
    assert rows["long"]["ciou"] == pytest.approx(9 / 10, abs=1e-9)
    assert "giou_ci" not in rows["overall"]
    with pytest.raises(ResultsError, match="empty-union"):
        summarize(SCORES, empty_union="nan")


def test_results_document_round_trip(tmp_path):
    doc = results_document(SCORES, split="val", protocol="lisa", method="m", dataset={"manifest_sha256": None},
                           predictions_sha256="sha256:x", bootstrap=50)
    path = write_results(tmp_path / "r.json", doc)
    back = read_results(path)
    assert back == json.loads(json.dumps(doc))
    assert back["format"] == "reasonseg-results" and back["version"] == 1
    assert back["queries"][1]["iou"] == 1.0  # empty union under lisa
    assert scores_from_results(back) == SCORES
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ResultsError, match="reasonseg-results"):
        read_results(tmp_path / "bad.json")


def test_table_layout_is_percent_with_one_decimal():
    row = {"n": 3, "giou": 0.52912, "ciou": 0.54, "giou_ci": [0.4951, 0.57], "ciou_ci": [0.5, 0.58]}
    assert format_metric(row, "giou") == "52.9 [49.5, 57.0]"
    assert format_metric(row, "ciou", with_ci=False) == "54.0"
    assert format_metric({"n": 0}, "giou") == "-"
    val = {"groups": {"overall": row}}
    test = {"groups": {"overall": row, "short": row, "long": row}}
    header, rows = table1({"lisa": {"val": val, "test": test}, "other": {"val": val}}, with_ci=False)
    assert header == ["method", "val", "test short", "test long", "test overall"]
    assert rows[0] == ["lisa"] + ["52.9 / 54.0"] * 4
    assert rows[1] == ["other", "52.9 / 54.0", "- / -", "- / -", "- / -"]
    header, rows = split_table(results_document(SCORES, split="val", protocol="lisa", method=None, dataset={},
                                                predictions_sha256="", bootstrap=0))
    assert header == ["group", "n", "gIoU", "cIoU"] and rows[0][:2] == ["overall", "3"]


def test_manifest_sample_sources_become_score_groups(tmp_path):
    import numpy as np
    from helpers import write_release

    from reasonseg.dataset import write_manifest
    from reasonseg.metrics.scoring import evaluate
    from reasonseg.submission import prediction_from_mask, write_predictions

    square = {"label": "target", "points": [[2, 2], [12, 2], [12, 12], [2, 12]]}
    anns = {sid: {"text": ["x"], "is_sentence": False, "shapes": [square]} for sid in ("a", "b", "c")}
    root = write_release(tmp_path / "rel", "val", anns, {sid: (20, 20) for sid in anns})
    write_manifest(root, sample_sources={"val/a": "openimages", "val/b": "scannet", "val/c": "openimages"})
    preds = [prediction_from_mask(sid, 0, np.ones((20, 20), np.uint8)) for sid in anns]
    write_predictions(tmp_path / "p.json", preds, "val", "full")
    doc = evaluate(root, tmp_path / "p.json", "val", cache_dir=tmp_path / "cache", bootstrap=0).document
    assert doc["groups"]["source:openimages"]["n"] == 2 and doc["groups"]["source:scannet"]["n"] == 1
    assert {q["id"]: q["source"] for q in doc["queries"]} == {"a": "openimages", "b": "scannet", "c": "openimages"}
