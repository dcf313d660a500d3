"""`build_release`: a release the readers accept, fidelity report, splits, reruns, bad inputs, --keep-going."""
from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from reasonseg.builders.release.build import assign_splits, build_release, demo_step
from reasonseg.builders.release.openimages import OpenImagesLayout
from reasonseg.builders.release.scannet import ScanNetLayout
from reasonseg.dataset import load_split, read_manifest, sha256_file, validate_release
from reasonseg.errors import BuildError
from reasonseg.masks import rasterize_shapes
from reasonseg.sample.bundle import write_build_sources
from reasonseg.sample.openimages import manifest_lines as oi_lines
from reasonseg.sample.openimages import write_manifest_jsonl
from reasonseg.schema import SPLITS


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    oi, sn, manifest = write_build_sources(root / "sources", scannet_size=(242, 324))
    return oi, sn, manifest


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    oi, sn, manifest = sources
    out = tmp_path_factory.mktemp("rel") / "ReasonSeg"
    return build_release(manifest, out, openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def _build(tmp_path, sources, lines, **kw):
    oi, sn, _ = sources
    manifest = write_manifest_jsonl(tmp_path / "m.jsonl", lines)
    return build_release(manifest, tmp_path / "out", openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn), **kw)


def test_release_is_read_by_load_split_and_validates(built, sources):
    out = built.out
    report = validate_release(out, strict=True)
    assert report.ok, [f.render() for f in report.findings]
    samples = {s.id: s for split in SPLITS for s in load_split(out, split, strict=True)}
    assert len(samples) == len(_lines(sources[2])) == built.report["counts"]["written"]
    assert {s.source for s in samples.values()} == {"openimages", "scannet"}
    for s in samples.values():
        assert (rasterize_shapes(s.shapes, s.height, s.width) == 1).any()
    manifest = read_manifest(out)
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    assert set(manifest["sample_sources"].values()) == {"openimages", "scannet"}


def test_json_carries_source_attribution_and_original_jpeg(built, sources):
    oi = sources[0]
    docs = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in built.out.rglob("*.json")
            if p.parent.name in SPLITS}
    first = next(d for d in docs.values() if d["source"]["dataset"] == "openimages")
    assert first["source"]["license"].startswith("https://creativecommons.org/licenses/by/2.0")
    assert first["source"]["author"].startswith("Synthetic Author")
    image_id = first["source"]["id"]
    assert isinstance(image_id, str) and len(image_id) == 16
    copied = next(built.out.rglob(f"{image_id}.jpg")).read_bytes()
    assert copied == (oi / "images" / "validation" / f"{image_id}.jpg").read_bytes()
    scannet = [d for d in docs.values() if d["source"]["dataset"] == "scannet"]
    assert {d["source"]["id"] for d in scannet} >= {"scene0000_00/0", "scene0001_00/2"}
    assert any(s["label"] == "ignore" for d in scannet for s in d["shapes"])


def test_fidelity_report_names_holes_and_thin_parts(built):
    report = built.report
    causes = {r["cause"] for r in report["review"]}
    assert {"holes", "thin parts"} <= causes
    assert all(r["iou"] < 0.98 for r in report["review"])
    assert sum(report["fidelity"]["histogram"].values()) == report["counts"]["written"]
    text = (built.out / "build_report.txt").read_text()
    assert "cause: holes" in text and "cause: thin parts" in text


def test_polygons_redraw_close_to_the_source_mask(built, sources):
    """Every pair not listed for review redraws its source mask at IoU >= 0.98 (checked independently here)."""
    reviewed = {r["name"] for r in built.report["review"]}
    ious = [p["iou"] for p in built.report["pairs"] if p["name"] not in reviewed]
    assert ious and min(ious) >= 0.98


def test_explanatory_from_train_explanations(built, sources):
    lines = {(d.get("image_id") or f"{d['scene']}_{d['frame']}"): d for d in _lines(sources[2])}
    entries = json.loads((built.out / "explanatory" / "train.json").read_text())
    train = {s.id for s in load_split(built.out, "train")}
    expected = sorted(n for n in train if lines[n].get("explanation"))
    assert [e["image"] for e in entries] == [f"{n}.jpg" for n in expected]
    for e in entries:
        line = lines[e["image"][:-4]]
        assert e["outputs"] == line["explanation"] and e["query"] == line["texts"][0]


def test_release_split_is_respected(built, sources):
    fixed = [d for d in _lines(sources[2]) if d.get("release_split")]
    assert fixed
    for d in fixed:
        assert (built.out / d["release_split"] / f"{d['image_id']}.jpg").is_file()


def test_split_assignment_reproduces_reasonseg_counts():
    strata = [("openimages" if i % 4 else "scannet", i % 3 == 0, None) for i in range(1218)]
    splits = assign_splits(strata, seed=3)
    assert collections.Counter(splits) == {"train": 239, "val": 200, "test": 779}
    assert splits == assign_splits(strata, seed=3) and splits != assign_splits(strata, seed=4)
    for key in {s[:2] for s in strata}:
        members = [sp for s, sp in zip(strata, splits, strict=True) if s[:2] == key]
        share = collections.Counter(members)["train"] / len(members)
        assert abs(share - 239 / 1218) < 0.01
    small = collections.Counter(assign_splits([("openimages", i % 2 == 0, None) for i in range(100)]))
    assert small == {"train": 20, "val": 16, "test": 64}
    mixed = assign_splits([("scannet", False, "val" if i < 5 else None) for i in range(50)])
    assert mixed[:5] == ["val"] * 5 and collections.Counter(mixed) == {"train": 10, "val": 8, "test": 32}


def test_rerun_and_workers_give_byte_identical_output(built, sources, tmp_path):
    oi, sn, manifest = sources
    again = build_release(manifest, tmp_path / "again", openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn),
                          workers=2)
    assert _files(again.out) == _files(built.out)


def test_out_must_be_new_unless_overwrite(built, sources, tmp_path):
    oi, sn, manifest = sources
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        build_release(manifest, out, openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn))
    assert (out / "keep.txt").read_text() == "mine"
    build_release(manifest, out, openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn), overwrite=True)
    # --overwrite replaces the builder's outputs only: a file it did not write stays.
    assert (out / "keep.txt").read_text() == "mine" and (out / "manifest.json").is_file()


BAD_LINES = [
    ("missing image", lambda d: {**d, "image_id": "0123456789abcdef"}, "image not found"),
    ("unknown MaskPath", lambda d: {**d, "targets": ["nope_m0_00000000.png"]}, "is not listed"),
    ("no texts", lambda d: {**d, "texts": []}, "texts"),
    ("no targets", lambda d: {**d, "targets": []}, "targets"),
    ("unknown source", lambda d: {**d, "source": "coco"}, "unknown source"),
    ("int image id", lambda d: {**d, "image_id": 123}, "string"),
    ("bad release split", lambda d: {**d, "release_split": "dev"}, "release_split"),
]


@pytest.mark.parametrize("case, change, message", BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_line_is_a_precise_error_and_nothing_is_written(sources, tmp_path, case, change, message):
    lines = _lines(sources[2])
    lines[2] = change(lines[2])
    with pytest.raises(BuildError) as info:
        _build(tmp_path, sources, lines)
    assert message in str(info.value) and "line 3" in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left behind


def test_mask_of_another_size_and_missing_mask_file(sources, tmp_path):
    oi = sources[0]
    copy = tmp_path / "oi"
    shutil.copytree(oi, copy)
    line = oi_lines(copy)[0]
    mask = copy / "masks" / "validation" / line["targets"][0]
    import cv2

    cv2.imwrite(str(mask), np.full((100, 400), 255, np.uint8))  # 4:1, the image is 4:3
    manifest = write_manifest_jsonl(tmp_path / "m.jsonl", [line])
    with pytest.raises(BuildError, match="another aspect ratio"):
        build_release(manifest, tmp_path / "out", openimages=OpenImagesLayout(copy))
    mask.unlink()
    with pytest.raises(BuildError, match="not found"):
        build_release(manifest, tmp_path / "out", openimages=OpenImagesLayout(copy))
    assert not (tmp_path / "out").exists()


def test_truncated_zip_and_corrupted_sens(sources, tmp_path):
    sn = tmp_path / "sn"
    shutil.copytree(sources[1], sn)
    zpath = sn / "scans" / "scene0000_00" / "scene0000_00_2d-instance-filt.zip"
    zpath.write_bytes(zpath.read_bytes()[:100])
    sens = sn / "scans" / "scene0001_00" / "scene0001_00.sens"
    sens.write_bytes(b"\x07\x00\x00\x00" + sens.read_bytes()[4:])
    lines = [d for d in _lines(sources[2]) if d["source"] == "scannet"]
    manifest = write_manifest_jsonl(tmp_path / "m.jsonl", lines)
    with pytest.raises(BuildError, match="truncated"):
        build_release(manifest, tmp_path / "out", scannet=ScanNetLayout(sn))
    result = build_release(manifest, tmp_path / "out", scannet=ScanNetLayout(sn), keep_going=True)
    messages = [p["message"] for p in result.problems]
    assert sum("truncated" in m for m in messages) == 2  # the scene0000_00 frames that need instance-filt
    assert any("corrupted .sens header" in m for m in messages)
    assert result.report["counts"]["written"] == 1  # frame 200 needs only the intact label zip


def test_keep_going_collects_every_problem_and_writes_the_rest(sources, tmp_path):
    lines = _lines(sources[2])
    lines[1] = {**lines[1], "texts": []}
    lines[4] = {**lines[4], "targets": ["nope.png"]}
    lines.insert(6, "not json")
    oi, sn, _ = sources
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    result = build_release(manifest, tmp_path / "out", openimages=OpenImagesLayout(oi), scannet=ScanNetLayout(sn),
                           keep_going=True)
    assert [p["line"] for p in result.problems] == [2, 5, 7]
    assert result.report["counts"]["written"] == len(lines) - 3
    assert validate_release(result.out).ok
    text = (result.out / "build_report.txt").read_text()
    assert "line 7" in text and "not valid JSON" in text


def test_explicit_polygon_target_is_kept_verbatim(built, sources):
    line = next(d for d in _lines(sources[2]) if any(isinstance(t, list) for t in d["targets"]))
    polygon = next(t for t in line["targets"] if isinstance(t, list))
    doc = json.loads(next(built.out.rglob(f"{line['image_id']}.json")).read_text())
    assert polygon in [s["points"] for s in doc["shapes"]]


def test_scores_break_down_by_source(built, tmp_path):
    from reasonseg.metrics.scoring import evaluate
    from reasonseg.submission import prediction_from_mask, write_predictions

    samples = load_split(built.out, "test")
    preds = [prediction_from_mask(s.id, 0, rasterize_shapes(s.shapes, s.height, s.width) == 1) for s in samples]
    path = write_predictions(tmp_path / "p.json", preds, "test", "oracle")
    doc = evaluate(built.out, path, "test", bootstrap=0, cache_dir=None).document
    assert {"source:openimages", "source:scannet"} <= set(doc["groups"])
    assert doc["groups"]["overall"]["giou"] == pytest.approx(1.0, abs=1e-4)


def test_demo_step_returns_a_valid_release(tmp_path):
    release = demo_step(tmp_path / "demo")
    assert release == tmp_path / "demo" / "release"
    assert validate_release(release).ok
    assert read_manifest(release)["name"] == "reasonseg-built-sample"
