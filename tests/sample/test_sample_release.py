"""reasonseg.sample.release: the synthetic release is deterministic, complete and in the public format."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from reasonseg.errors import DatasetError
from reasonseg.sample import DEFAULT_COUNTS, SPECIAL, SPECIAL_PLAN, special_cases, write_sample_release

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_sample_release(tmp_path_factory.mktemp("sample") / "ReasonSeg", seed=0)


def _read(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252"))


def _docs(release: Path, split: str) -> dict[str, dict]:
    return {p.stem: _read(p) for p in sorted((release / split).glob("*.json"))}


def _fill(shapes: list[dict], size: tuple[int, int], label: str) -> np.ndarray:
    """Union of the shapes with this label, drawn the reference way (int32 truncation, outline + fill)."""
    canvas = np.zeros(size, np.uint8)
    for shape in shapes:
        if shape["label"] == label:
            points = np.array(shape["points"], dtype=np.float64).astype(np.int32)
            cv2.polylines(canvas, [points], True, 1, 1)
            cv2.fillPoly(canvas, [points], 1)
    return canvas.astype(bool)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, release):
    again = _files(write_sample_release(tmp_path / "again", seed=0))
    assert again == _files(release)
    other = _files(write_sample_release(tmp_path / "other", seed=1))
    assert set(other) != set(again)
    assert not (set(other) & set(again)) - {"explanatory/train.json"}


def test_layout_and_counts(release):
    assert sorted(p.name for p in release.iterdir()) == ["explanatory", "test", "train", "val"]
    ids = set()
    for split in SPLITS:
        jpgs = {p.stem for p in (release / split).glob("*.jpg")}
        jsons = {p.stem for p in (release / split).glob("*.json")}
        assert jpgs == jsons
        assert len(jpgs) == DEFAULT_COUNTS[split]
        assert all(re.fullmatch(r"[0-9a-f]{16}", name) for name in jpgs)
        assert not ids & jpgs
        ids |= jpgs
    assert not list(release.glob(".*"))


def test_json_keys_and_types(release):
    for split in SPLITS:
        for name, doc in _docs(release, split).items():
            assert list(doc) == ["text", "is_sentence", "shapes", "imagePath", "imageHeight", "imageWidth"]
            assert isinstance(doc["is_sentence"], bool)
            max_texts = 5 if split == "train" else 4
            assert 1 <= len(doc["text"]) <= max_texts
            assert all(isinstance(t, str) and t for t in doc["text"])
            assert len(set(doc["text"])) == len(doc["text"])
            assert doc["imagePath"] == f"{name}.jpg"
            assert isinstance(doc["imageHeight"], int) and isinstance(doc["imageWidth"], int)
            for shape in doc["shapes"]:
                assert shape == {"label": shape["label"], "points": shape["points"], "group_id": None,
                                 "shape_type": "polygon", "flags": {}}
                assert shape["label"] in {"target", "ignore", "flag"}
                assert len(shape["points"]) >= 3
                assert all(len(p) == 2 and all(isinstance(v, float) for v in p) for p in shape["points"])
            points = [v for shape in doc["shapes"] for p in shape["points"] for v in p]
            if points:
                assert any(v != int(v) for v in points), "points should have fractional parts"


def test_short_and_long_queries_are_balanced(release):
    for split in SPLITS:
        docs = _docs(release, split).values()
        long = sum(doc["is_sentence"] for doc in docs)
        assert long == DEFAULT_COUNTS[split] // 2
        for doc in docs:
            if doc["is_sentence"]:
                assert doc["text"][0][-1] in ".?"
            else:
                assert doc["text"][0] == doc["text"][0].lower() and not doc["text"][0].endswith((".", "?"))


def test_images_decode_with_the_declared_size(release):
    sizes = set()
    for split in SPLITS:
        for name, doc in _docs(release, split).items():
            image = cv2.imread(str(release / split / f"{name}.jpg"), cv2.IMREAD_COLOR)
            assert image is not None
            assert image.shape == (doc["imageHeight"], doc["imageWidth"], 3)
            sizes.add(image.shape[:2])
    assert len(sizes) > 1


def test_targets_are_visible(release):
    kernel = np.ones((3, 3), np.uint8)
    differences = []
    for split in SPLITS:
        for name, doc in _docs(release, split).items():
            if not doc["shapes"]:
                continue
            image = cv2.imread(str(release / split / f"{name}.jpg")).astype(np.float64)
            target = _fill(doc["shapes"], image.shape[:2], "target").astype(np.uint8)
            inside = cv2.erode(target, kernel, iterations=3).astype(bool)
            near = cv2.dilate(target, kernel, iterations=6).astype(bool)
            ring = near & ~cv2.dilate(target, kernel, iterations=2).astype(bool)
            assert inside.sum() > 20 and ring.sum() > 20
            difference = np.abs(image[inside].mean(axis=0) - image[ring].mean(axis=0)).sum()
            assert difference > 40, (split, name, difference)
            differences.append(difference)
    assert np.mean(differences) > 150


def test_special_cases_are_where_special_says(release, tmp_path):
    assert SPECIAL == special_cases(0)
    counted = {}
    for split in SPLITS:
        for case in SPECIAL_PLAN[split]:
            counted[case, split] = counted.get((case, split), 0) + 1
    for case, entries in SPECIAL.items():
        for split, name in entries:
            assert (release / split / f"{name}.json").is_file()
        for split in SPLITS:
            assert sum(s == split for s, _ in entries) == counted.get((case, split), 0)
    for split in SPLITS:
        assert sum(s == split for s, _ in SPECIAL["ignore_partial"]) >= 3
        assert sum(s == split for s, _ in SPECIAL["flag"]) >= 2
    small = special_cases(0, {"val": 2})
    assert small == {"cp1252": [SPECIAL["cp1252"][0]], "ignore_partial": [SPECIAL["ignore_partial"][3]]}


def test_exactly_one_cp1252_file(release):
    undecodable = []
    for split in SPLITS:
        for path in sorted((release / split).glob("*.json")):
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                undecodable.append((split, path.stem))
    assert undecodable == SPECIAL["cp1252"] == [("val", undecodable[0][1])]
    split, name = undecodable[0]
    doc = json.loads((release / split / f"{name}.json").read_bytes().decode("cp1252"))
    assert "naïve" in doc["text"][0]
    assert doc["is_sentence"] is True


def test_exactly_one_empty_ground_truth(release):
    empty = [(split, name) for split in SPLITS
             for name, doc in _docs(release, split).items() if not doc["shapes"]]
    assert empty == SPECIAL["empty_shapes"]
    assert empty[0][0] == "test"


def test_ignore_and_flag_cases(release):
    labels = {split: set() for split in SPLITS}
    for split in SPLITS:
        for doc in _docs(release, split).values():
            labels[split] |= {shape["label"] for shape in doc["shapes"]}
    assert all(found == {"target", "ignore", "flag"} for found in labels.values())

    for split, name in SPECIAL["ignore_partial"]:
        doc = _read(release / split / f"{name}.json")
        size = (doc["imageHeight"], doc["imageWidth"])
        target, ignore = _fill(doc["shapes"], size, "target"), _fill(doc["shapes"], size, "ignore")
        assert ignore.sum() < target.sum()  # so the area order paints the ignore square over the target
        assert (target & ignore).any() and (target & ~ignore).any() and (ignore & ~target).any()

    for split, name in SPECIAL["target_in_ignore"]:
        doc = _read(release / split / f"{name}.json")
        size = (doc["imageHeight"], doc["imageWidth"])
        target, ignore = _fill(doc["shapes"], size, "target"), _fill(doc["shapes"], size, "ignore")
        assert not (target & ~ignore).any() and ignore.sum() > target.sum()
        assert doc["shapes"][0]["label"] == "target"  # file order is not area order

    for split, name in SPECIAL["flag"]:
        doc = _read(release / split / f"{name}.json")
        size = (doc["imageHeight"], doc["imageWidth"])
        flag = _fill(doc["shapes"], size, "flag")
        assert flag.sum() > 50 and not (flag & _fill(doc["shapes"], size, "target")).any()
    flagged = {(s, n) for s, n in SPECIAL["flag"]}
    for split in SPLITS:
        for name, doc in _docs(release, split).items():
            has_flag = any(shape["label"] == "flag" for shape in doc["shapes"])
            assert has_flag == ((split, name) in flagged)


def test_two_polygon_targets_and_out_of_bounds(release):
    for split, name in SPECIAL["two_polygons"]:
        doc = _read(release / split / f"{name}.json")
        assert [shape["label"] for shape in doc["shapes"]] == ["target", "target"]
    for split in SPLITS:
        for name, doc in _docs(release, split).items():
            if (split, name) not in SPECIAL["two_polygons"]:
                assert sum(shape["label"] == "target" for shape in doc["shapes"]) <= 1
    for split, name in SPECIAL["out_of_bounds"]:
        doc = _read(release / split / f"{name}.json")
        points = np.array(doc["shapes"][0]["points"])
        outside = ((points[:, 0] < 0) | (points[:, 0] > doc["imageWidth"])
                   | (points[:, 1] < 0) | (points[:, 1] > doc["imageHeight"]))
        assert outside.any() and not outside.all()
    assert {split for split, _ in SPECIAL["out_of_bounds"]} == set(SPLITS)


def test_explanatory_file(release):
    entries = json.loads((release / "explanatory" / "train.json").read_text(encoding="utf-8"))
    train = _docs(release, "train")
    assert len(entries) == DEFAULT_COUNTS["train"] // 2
    for entry in entries:
        assert list(entry) == ["image", "query", "outputs"]
        doc = train[entry["image"].removesuffix(".jpg")]
        assert doc["is_sentence"] and entry["query"] == doc["text"][0]
        assert entry["outputs"]


def test_counts_and_size_options(tmp_path):
    out = write_sample_release(tmp_path / "small", seed=3, counts={"val": 3}, size=(96, 128))
    assert sorted(p.name for p in out.iterdir()) == ["val"]
    docs = _docs(out, "val")
    assert len(docs) == 3
    for name, doc in docs.items():
        assert (doc["imageHeight"], doc["imageWidth"]) == (96, 128)
        assert cv2.imread(str(out / "val" / f"{name}.jpg")).shape == (96, 128, 3)
    with pytest.raises(ValueError):
        write_sample_release(tmp_path / "bad", counts={"dev": 1})
    with pytest.raises(ValueError):
        write_sample_release(tmp_path / "bad", counts={"val": 1}, size=(10, 10))
    assert not (tmp_path / "bad").exists()


def test_existing_non_empty_output_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        write_sample_release(out, counts={"val": 1})
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_sample_release(empty, counts={"val": 1}) == empty
    assert len(list((empty / "val").iterdir())) == 2
