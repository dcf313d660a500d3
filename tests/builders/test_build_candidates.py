"""Worksheets: seeded candidate picks, contact sheets, and rows that become manifest lines once filled in."""
from __future__ import annotations

import json

import cv2
import pytest

from reasonseg.builders.release.build import build_release
from reasonseg.builders.release.candidates import write_candidates
from reasonseg.builders.release.openimages import OpenImagesLayout
from reasonseg.builders.release.scannet import ScanNetLayout
from reasonseg.dataset import load_split
from reasonseg.sample.bundle import write_build_sources


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return write_build_sources(tmp_path_factory.mktemp("cand") / "src", scannet_size=(242, 324))


def _rows(folder):
    return [json.loads(line) for line in (folder / "worksheet.jsonl").read_text().splitlines()]


def test_worksheet_is_seeded_and_sheets_exist(sources, tmp_path):
    oi, sn, _ = sources
    a = write_candidates(tmp_path / "a", n=4, openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn), seed=1)
    write_candidates(tmp_path / "b", n=4, openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn), seed=1)
    assert a["rows"] == 4
    assert (tmp_path / "a" / "worksheet.jsonl").read_bytes() == (tmp_path / "b" / "worksheet.jsonl").read_bytes()
    rows = _rows(tmp_path / "a")
    for row in rows:
        assert len(row["instances"]) >= 2
        sheet = cv2.imread(str(tmp_path / "a" / row["contact_sheet"]))
        assert sheet is not None and sheet.shape[0] > 0
    assert "<figure>" in (tmp_path / "a" / "index.html").read_text()
    # Class diversity: the first picks cover more classes than repeating one image's classes would.
    classes = {i["class"] for row in rows for i in row["instances"]}
    assert len(classes) >= 5


def test_min_instances_filters(sources, tmp_path):
    oi, _, _ = sources
    write_candidates(tmp_path / "c", n=50, openimages=OpenImagesLayout(oi), min_instances=3)
    rows = _rows(tmp_path / "c")
    assert rows and all(len(r["instances"]) >= 3 for r in rows)


def test_filled_worksheet_rows_build(sources, tmp_path):
    oi, sn, _ = sources
    write_candidates(tmp_path / "w", n=10, openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn))
    lines = []
    for k, row in enumerate(_rows(tmp_path / "w")):
        row.update({"targets": [row["instances"][-1]["n"]], "texts": [f"the {row['instances'][-1]['class']}"],
                    "is_sentence": False})
        lines.append(row)
        if k == 5:
            break
    manifest = tmp_path / "filled.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = build_release(manifest, tmp_path / "rel", openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn))
    assert result.report["counts"]["written"] == len(lines)
    docs = [json.loads(s.json_path.read_text()) for split in ("train", "val", "test")
            if (tmp_path / "rel" / split).is_dir() for s in load_split(tmp_path / "rel", split)]
    for doc in docs:
        if doc["source"]["dataset"] == "openimages":
            assert doc["source"]["classes"] == [doc["text"][0][4:]]
