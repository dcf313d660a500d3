"""Reading, validating and fingerprinting a ReasonSeg release folder (docs/protocol.md §1, docs/formats.md)."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reasonseg.dataset import (
    ReleaseWarning,
    atomic_write_text,
    image_size,
    load_split,
    read_annotation,
    read_manifest,
    validate_release,
    write_manifest,
)
from reasonseg.errors import DatasetError

_DROP = object()  # an annotation() override that removes the key
SQUARE = [{"label": "target", "points": [[2.5, 2.5], [12.9, 2.0], [12.0, 10.0], [2.0, 10.0]]}]


def annotation(**overrides) -> dict:
    ann = {"text": ["the red cup"], "is_sentence": False, "shapes": SQUARE}
    ann.update(overrides)
    return {k: v for k, v in ann.items() if v is not _DROP}



def add_sample(folder: Path, stem: str, ann: dict | bytes | None = None, *, suffix: str = ".jpg",
               size: tuple[int, int] = (20, 30)) -> Path:
    """Write `<stem><suffix>` (an H x W image) and `<stem>.json`; `ann=None` writes the default annotation."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{stem}{suffix}"
    assert cv2.imwrite(str(image), np.full((*size, 3), 90, np.uint8))
    data = ann if isinstance(ann, bytes) else json.dumps(annotation() if ann is None else ann).encode("utf-8")
    (folder / f"{stem}.json").write_bytes(data)
    return image


def dataset_error(call, *parts: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return info.value


# ------------------------------------------------------------------------------------------------ annotations

def test_cp1252_fallback(tmp_path):
    add_sample(tmp_path / "val", "a", json.dumps(annotation(text=["the café sign"]),
                                                 ensure_ascii=False).encode("cp1252"))
    with pytest.raises(UnicodeDecodeError):
        (tmp_path / "val" / "a.json").read_bytes().decode("utf-8")
    [sample] = load_split(tmp_path, "val")
    assert sample.texts == ("the café sign",)
    assert sample.encoding == "cp1252"


def test_utf8_is_preferred(tmp_path):
    raw = json.dumps(annotation(text=["café"]), ensure_ascii=False).encode("utf-8")
    add_sample(tmp_path / "val", "a", raw)
    [sample] = load_split(tmp_path, "val")
    assert (sample.texts, sample.encoding) == (("café",), "utf-8")


@pytest.mark.parametrize("raw", [
    b'{"text": ["the cup"], "is_sentence": false,',          # valid UTF-8, JSON syntax error in both
    b'{"text": ["caf\x81\xe9"], "is_sentence": false}\xff',   # neither UTF-8 nor cp1252 (0x81 is undefined)
    b"",
])
def test_annotation_neither_utf8_nor_cp1252_json(tmp_path, raw):
    path = tmp_path / "a.json"
    path.write_bytes(raw)
    exc = dataset_error(lambda: read_annotation(path), str(path), "not valid JSON in UTF-8 or cp1252")
    assert exc.path == str(path)


def test_annotation_not_an_object(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[1, 2]", encoding="utf-8")
    dataset_error(lambda: read_annotation(path), str(path), "must be a JSON object")


def test_extra_keys_are_ignored_and_recorded(tmp_path):
    ann = annotation(imagePath="a.jpg", flags={}, version="4.5.6")
    add_sample(tmp_path / "val", "a", ann)
    [sample] = load_split(tmp_path, "val")
    assert sample.extra_keys == ("flags", "imagePath", "version")
    assert sample.texts == ("the red cup",) and len(sample.shapes) == 1


def test_sample_fields(tmp_path):
    add_sample(tmp_path / "val", "a", annotation(is_sentence=True, text=["one", "two"]), size=(24, 32))
    [sample] = load_split(tmp_path, "val")
    assert (sample.id, sample.split, sample.height, sample.width) == ("a", "val", 24, 32)
    assert sample.is_sentence is True and sample.texts == ("one", "two")
    assert sample.shapes[0].label == "target"
    assert sample.shapes[0].points == ((2.5, 2.5), (12.9, 2.0), (12.0, 10.0), (2.0, 10.0))
    assert sample.image_path == tmp_path / "val" / "a.jpg" and sample.json_path == tmp_path / "val" / "a.json"


@pytest.mark.parametrize("shapes", [[], _DROP, None])
def test_empty_or_missing_shapes(tmp_path, shapes):
    add_sample(tmp_path / "val", "a", annotation(shapes=shapes))
    [sample] = load_split(tmp_path, "val")
    assert sample.shapes == ()


def test_text_as_single_string(tmp_path):
    add_sample(tmp_path / "val", "a", annotation(text="the red cup"))
    exc = dataset_error(lambda: load_split(tmp_path, "val"), str(tmp_path / "val" / "a.json"), "sample 'a'",
                        "field 'text'", "single string")
    assert exc.field == "text"


@pytest.mark.parametrize("text", [[1, 2], {"0": "x"}, None])
def test_text_not_a_list_of_strings(tmp_path, text):
    add_sample(tmp_path / "val", "a", annotation(text=text))
    dataset_error(lambda: load_split(tmp_path, "val"), "field 'text'", "list of strings")


@pytest.mark.parametrize("is_sentence", [_DROP, 1, "true", None])
def test_is_sentence_missing_or_not_bool(tmp_path, is_sentence):
    add_sample(tmp_path / "val", "a", annotation(is_sentence=is_sentence))
    dataset_error(lambda: load_split(tmp_path, "val"), str(tmp_path / "val" / "a.json"), "sample 'a'",
                  "field 'is_sentence'")


@pytest.mark.parametrize("points", [
    [[1]], [[1, "x"]], 5, None, "1234",
    ["12", "34", "56"],  # digit strings would otherwise read as the points (1, 2), (3, 4), (5, 6)
    [{"x": 1, "y": 2}],
])
def test_bad_points(tmp_path, points):
    add_sample(tmp_path / "val", "a", annotation(shapes=[{"label": "target", "points": points}]))
    exc = dataset_error(lambda: load_split(tmp_path, "val"), "sample 'a'", "field 'shapes[0].points'")
    assert exc.field == "shapes[0].points"


@pytest.mark.parametrize("coordinate", [float("nan"), 1e31])
def test_points_out_of_range(tmp_path, coordinate):
    shapes = [SQUARE[0], {"label": "target", "points": [[1, 1], [coordinate, 2], [3, 3]]}]
    add_sample(tmp_path / "val", "a", annotation(shapes=shapes))
    dataset_error(lambda: load_split(tmp_path, "val"), "field 'shapes[1].points'", "NaN or an out-of-range")


def test_bad_shape_and_label(tmp_path):
    add_sample(tmp_path / "val", "a", annotation(shapes=["target"]))
    dataset_error(lambda: load_split(tmp_path, "val"), "field 'shapes[0]'", "must be an object")
    add_sample(tmp_path / "val", "a", annotation(shapes=[{"label": 3, "points": [[1, 2]]}]))
    dataset_error(lambda: load_split(tmp_path, "val"), "field 'shapes[0].label'")
    add_sample(tmp_path / "val", "a", annotation(shapes={"label": "target"}))
    dataset_error(lambda: load_split(tmp_path, "val"), "field 'shapes'", "must be a list")


# ----------------------------------------------------------------------------------------------------- splits

def test_png_image_lenient_warns_strict_skips(tmp_path):
    add_sample(tmp_path / "val", "a")
    add_sample(tmp_path / "val", "b", suffix=".png")
    with pytest.warns(ReleaseWarning, match=r"1 image\(s\) are not \.jpg \(e\.g\. b\.png\)"):
        lenient = load_split(tmp_path, "val")
    assert [s.id for s in lenient] == ["a", "b"]
    assert lenient[1].image_path.suffix == ".png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict = load_split(tmp_path, "val", strict=True)
    assert [s.id for s in strict] == ["a"]


def test_uppercase_jpg_is_skipped_in_strict_mode(tmp_path):
    # The reference globs "*.jpg": a ".JPG" file is invisible to it.
    add_sample(tmp_path / "val", "a")
    add_sample(tmp_path / "val", "b", suffix=".JPG")
    assert [s.id for s in load_split(tmp_path, "val", strict=True)] == ["a"]


def test_image_without_json(tmp_path):
    add_sample(tmp_path / "val", "a")
    assert cv2.imwrite(str(tmp_path / "val" / "b.jpg"), np.zeros((8, 8, 3), np.uint8))
    exc = dataset_error(lambda: load_split(tmp_path, "val"), str(tmp_path / "val" / "b.jpg"), "sample 'b'",
                        "no annotation JSON", "b.json")
    assert exc.sample_id == "b"


def test_duplicate_stems(tmp_path):
    add_sample(tmp_path / "val", "a")
    add_sample(tmp_path / "val", "a", suffix=".png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReleaseWarning)
        dataset_error(lambda: load_split(tmp_path, "val"), str(tmp_path / "val"), "share the id 'a'",
                      "a.jpg", "a.png")


def test_missing_split_and_empty_split(tmp_path):
    dataset_error(lambda: load_split(tmp_path, "val"), "split folder 'val' not found")
    (tmp_path / "val").mkdir()
    dataset_error(lambda: load_split(tmp_path, "val"), "split 'val' has no images")


def test_train_val_joins_splits(tmp_path):
    add_sample(tmp_path / "train", "t1")
    add_sample(tmp_path / "train", "t2")
    add_sample(tmp_path / "val", "v1")
    samples = load_split(tmp_path, "train_val")
    assert [(s.split, s.id) for s in samples] == [("train", "t1"), ("train", "t2"), ("val", "v1")]


def test_joined_splits_reject_shared_ids(tmp_path):
    add_sample(tmp_path / "train", "x")
    add_sample(tmp_path / "val", "x")
    dataset_error(lambda: load_split(tmp_path, "train_val"), "share the id 'x'")


# ----------------------------------------------------------------------------------------------------- images

def _jpeg_with_orientation(path: Path, orientation: int | None, size=(40, 20)) -> None:
    img = Image.new("RGB", size, (200, 10, 10))
    if orientation is None:
        img.save(path, "JPEG")
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(path, "JPEG", exif=exif)


def test_image_size_plain(tmp_path):
    path = tmp_path / "a.jpg"
    _jpeg_with_orientation(path, None)
    assert image_size(path) == (20, 40) == cv2.imread(str(path)).shape[:2]


@pytest.mark.parametrize("orientation", [6, 8])
def test_image_size_honours_exif_orientation(tmp_path, orientation):
    path = tmp_path / "a.jpg"
    _jpeg_with_orientation(path, orientation)
    assert cv2.imread(str(path)).shape[:2] == (40, 20)  # OpenCV rotates: the stored 40x20 reads as 20 wide
    assert image_size(path) == (40, 20)


def test_image_size_orientation_3_does_not_swap(tmp_path):
    path = tmp_path / "a.jpg"
    _jpeg_with_orientation(path, 3)
    assert image_size(path) == (20, 40) == cv2.imread(str(path)).shape[:2]


def test_image_size_reads_the_header_only(tmp_path):
    path = tmp_path / "a.jpg"
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])  # pixel data cut short; the header is intact
    assert image_size(path) == (300, 400)


def test_image_size_of_a_corrupt_file(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(np.random.default_rng(1).bytes(500))
    dataset_error(lambda: image_size(path), str(path), "image does not open")


# ------------------------------------------------------------------------------------------------- validation

def build_messy_release(root: Path) -> Path:
    val = root / "val"
    add_sample(val, "long1", annotation(is_sentence=True, text=["something to sit on after a long walk"]))
    add_sample(val, "short1")
    add_sample(val, "short2")
    add_sample(val, "emptygt", annotation(shapes=[]))
    add_sample(val, "cp", json.dumps(annotation(text=["café"]), ensure_ascii=False).encode("cp1252"))
    add_sample(val, "car", annotation(shapes=[{"label": "car", "points": SQUARE[0]["points"]}]))
    add_sample(val, "line", annotation(shapes=[{"label": "target", "points": [[1, 1], [15, 12]]}]))
    (val / "orphanjson.json").write_text(json.dumps(annotation()), encoding="utf-8")
    assert cv2.imwrite(str(val / "orphanimg.jpg"), np.zeros((8, 8, 3), np.uint8))
    (val / "broken.jpg").write_bytes(np.random.default_rng(3).bytes(2000))
    (val / "broken.json").write_text(json.dumps(annotation()), encoding="utf-8")
    add_sample(val, "badjson", b'{"text": ')
    add_sample(root / "test", "t1", annotation(is_sentence=True))
    return root


def find(report, level: str, path_end: str, text: str):
    hits = [f for f in report.findings
            if f.level == level and f.path.endswith(path_end) and text in f.message]
    assert hits, f"no {level} on {path_end!r} with {text!r} in {[f.render() for f in report.findings]}"
    return hits


def test_validate_release_reports_everything(tmp_path):
    report = validate_release(build_messy_release(tmp_path))
    assert not report.ok
    val, test = report.splits["val"], report.splits["test"]
    assert (val["count"], val["expected"], val["short"], val["long"]) == (7, 200, 6, 1)
    assert (val["empty_gt"], val["cp1252"], val["texts"]) == (1, 1, 7)
    assert (test["count"], test["expected"], test["short"], test["long"]) == (1, 779, 0, 1)
    find(report, "warning", "val", "7 samples, the ReasonSeg release has 200")
    find(report, "warning", "test", "1 samples, the ReasonSeg release has 779")
    find(report, "warning", "train", "split folder missing")
    find(report, "error", "orphanjson.json", "no image beside it")
    find(report, "error", "orphanimg.jpg", "no annotation JSON")
    find(report, "warning", "emptygt.json", "empty ground truth")
    find(report, "warning", "cp.json", "cp1252")
    find(report, "warning", "car.json", "unknown label 'car'")
    find(report, "warning", "line.json", "2 point(s): not a polygon")
    find(report, "error", "broken.jpg", "does not open")
    find(report, "error", "badjson.json", "not valid JSON")
    find(report, "warning", "manifest.json", "no manifest")
    sample_ids = {f.sample_id for f in report.findings if f.sample_id}
    assert {"orphanjson", "orphanimg", "emptygt", "cp", "car", "line", "broken", "badjson"} <= sample_ids
    # The clean samples raise nothing.
    assert not {"long1", "short1", "short2", "t1"} & sample_ids
    assert all("\n" not in f.render() for f in report.findings)


def test_validate_reports_a_truncated_image_as_error(tmp_path):
    image = add_sample(tmp_path / "val", "a", size=(200, 300))
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) // 2])
    report = validate_release(tmp_path)
    find(report, "error", "a.jpg", "does not decode")
    assert report.splits["val"]["count"] == 0


def test_validate_field_errors_name_the_field(tmp_path):
    add_sample(tmp_path / "val", "a", annotation(text="one string"))
    report = validate_release(tmp_path)
    find(report, "error", "a.json", "(field text)")


def test_validate_png_image_level_depends_on_strict(tmp_path):
    add_sample(tmp_path / "val", "a", suffix=".png")
    find(validate_release(tmp_path), "warning", "a.png", "not a .jpg")
    find(validate_release(tmp_path, strict=True), "error", "a.png", "not a .jpg")


def test_validate_flag_with_two_points_is_fine(tmp_path):
    shapes = SQUARE + [{"label": "flag", "points": [[0, 0], [1, 1]]}]
    add_sample(tmp_path / "val", "a", annotation(shapes=shapes))
    report = validate_release(tmp_path)
    assert not [f for f in report.findings if f.sample_id == "a"]


def test_validate_needs_a_release(tmp_path):
    dataset_error(lambda: validate_release(tmp_path / "nope"), "release folder not found")
    dataset_error(lambda: validate_release(tmp_path), "no train/, val/ or test/ folder")


# --------------------------------------------------------------------------------------------------- manifest

@pytest.fixture
def clean_release(tmp_path):
    root = tmp_path / "ReasonSeg"
    add_sample(root / "val", "a")
    add_sample(root / "val", "b", annotation(is_sentence=True))
    add_sample(root / "train", "c")
    (root / "explanatory").mkdir()
    (root / "explanatory" / "train.json").write_text("[]", encoding="utf-8")
    return root


def manifest_findings(report):
    return [f for f in report.findings if "manifest" in f.message or f.path.endswith("manifest.json")]


def test_manifest_round_trip(clean_release):
    assert read_manifest(clean_release) is None
    written = write_manifest(clean_release, name="RS", version="0.1", sources={"val": "synthetic"})
    assert read_manifest(clean_release) == written
    assert written["splits"] == {"train": {"count": 1, "short": 1, "long": 0},
                                 "val": {"count": 2, "short": 1, "long": 1}}
    assert sorted(written["files"]) == ["explanatory/train.json", "train/c.jpg", "train/c.json",
                                        "val/a.jpg", "val/a.json", "val/b.jpg", "val/b.json"]
    assert all(v.startswith("sha256:") and len(v) == 7 + 64 for v in written["files"].values())
    assert (written["name"], written["version"], written["sources"]) == ("RS", "0.1", {"val": "synthetic"})
    assert sorted(os.listdir(clean_release)) == ["explanatory", "manifest.json", "train", "val"]
    assert manifest_findings(validate_release(clean_release)) == []


def test_manifest_detects_a_changed_file(clean_release):
    write_manifest(clean_release)
    (clean_release / "val" / "a.json").write_text(json.dumps(annotation(text=["edited"])), encoding="utf-8")
    report = validate_release(clean_release)
    [hit] = find(report, "error", "val/a.json", "checksum differs")
    assert not report.ok
    assert [f.path for f in report.findings if "checksum" in f.message] == [hit.path]


def test_manifest_detects_a_missing_file(clean_release):
    write_manifest(clean_release)
    (clean_release / "explanatory" / "train.json").unlink()
    report = validate_release(clean_release)
    find(report, "error", "explanatory/train.json", "listed in the manifest but missing")


def test_manifest_entry_outside_the_release(clean_release):
    manifest = write_manifest(clean_release)
    outside = clean_release.parent / "secret.txt"
    outside.write_text("x")
    manifest["files"]["../secret.txt"] = "sha256:" + "0" * 64
    (clean_release / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = validate_release(clean_release)
    find(report, "error", "manifest.json", "outside the release: '../secret.txt'")
    assert not [f for f in report.findings if f.path.endswith("secret.txt")]


def test_manifest_that_is_not_json(clean_release):
    (clean_release / "manifest.json").write_text("{oops", encoding="utf-8")
    dataset_error(lambda: read_manifest(clean_release), "manifest is not valid JSON")
    find(validate_release(clean_release), "error", "manifest.json", "not valid JSON")
    (clean_release / "manifest.json").write_text('{"files": []}', encoding="utf-8")
    dataset_error(lambda: read_manifest(clean_release), "'files' mapping")


# ----------------------------------------------------------------------------------------------- atomic write

def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second — ünïcode")
    assert target.read_text(encoding="utf-8") == "second — ünïcode"
    assert os.listdir(target.parent) == ["out.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "bad \ud800 surrogate")
    assert target.read_text(encoding="utf-8") == "old"
    assert os.listdir(tmp_path) == ["out.json"]
