"""ADE20K and COCO-Stuff readers: masks equal `label == class`, ignore regions, names, bad inputs."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from qa_testlib import build, gotcha_root

from reasonseg.builders.qa import QASourceError
from reasonseg.builders.qa.cocostuff import OFFICIAL_NAMES
from reasonseg.masks import decode_rle
from reasonseg.sample.qa_sources import write_ade20k, write_cocostuff


@pytest.fixture()
def ade(tmp_path):
    return write_ade20k(gotcha_root(tmp_path) / "ade20k", seed=3, count=5)


@pytest.fixture()
def cocostuff(tmp_path):
    root = gotcha_root(tmp_path)
    return write_cocostuff(root / "cocostuff", root / "coco", seed=3, count=5)


def _label(path):
    return np.asarray(Image.open(path))


def test_ade20k_masks_are_label_equals_class_and_zero_is_ignored(ade, tmp_path):
    _, records = build({"ade20k": ade}, tmp_path / "out", per_sample=2)
    names = {1: "wall", 4: "floor", 13: "person", 20: "chair", 23: "painting", 37: "lamp", 150: "flag"}
    by_name = {v: k for k, v in names.items()}
    asked = {}
    for rec in records:
        stem = rec["id"].split("/")[1]
        assert rec["image"] == f"images/training/{stem}.jpg"
        assert (ade / rec["image"]).is_file()
        label = _label(ade / "annotations" / "training" / f"{stem}.png")
        assert len(rec["targets"]) <= 2 and len(rec["masks"]) == len(rec["targets"])
        for name, rle in zip(rec["targets"], rec["masks"], strict=True):
            assert np.array_equal(decode_rle(rle), (label == by_name[name]).astype(np.uint8))
            asked.setdefault(stem, []).append(by_name[name])
        if (label == 0).any():
            assert np.array_equal(decode_rle(rec["ignore"]), (label == 0).astype(np.uint8))
        else:
            assert rec["ignore"] is None
    # Every class present is asked exactly once; the all-zero image 2 gives no record.
    for stem, values in asked.items():
        label = _label(ade / "annotations" / "training" / f"{stem}.png")
        assert sorted(values) == sorted(int(v) for v in np.unique(label) if v != 0)
    assert "ADE_train_00000002" not in asked
    # Image 1 holds 0, 1, 13 and 150: 150 is the last class (flag); person is the first synonym of its row.
    assert sorted(asked["ADE_train_00000001"]) == [1, 13, 150]


def test_ade20k_bad_inputs(ade, tmp_path):
    label_path = ade / "annotations" / "training" / "ADE_train_00000003.png"
    label = _label(label_path).copy()
    label[0, 0] = 151
    cv2.imwrite(str(label_path), label)
    for workers in (1, 2):
        with pytest.raises(QASourceError, match=r"ADE_train_00000003.*label value 151 is out of range"):
            build({"ade20k": ade}, tmp_path / "out", workers=workers)
    assert not (tmp_path / "out" / "qa.jsonl").exists()
    (ade / "annotations" / "training" / "ADE_train_00000004.png").unlink()
    summary, records = build({"ade20k": ade}, tmp_path / "out", keep_going=True)
    assert build({"ade20k": ade}, tmp_path / "out2", keep_going=True, workers=2)[0].skipped == summary.skipped
    reasons = {s["item"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {"ADE_train_00000003", "ADE_train_00000004"}
    assert "annotation PNG not found" in reasons["ADE_train_00000004"]
    assert str(ade / "annotations" / "training" / "ADE_train_00000004.png") in reasons["ADE_train_00000004"]
    assert not any("ADE_train_00000003" in r["id"] or "ADE_train_00000004" in r["id"] for r in records)
    log = json.loads((tmp_path / "out" / "build.json").read_text())
    assert log["skipped"] == summary.skipped and log["empty_items"] == {"ade20k": 1}


def _objectinfo_csv(ade):
    """objectInfo150.csv in place of the .txt (the common variant: synonyms joined by ';', a Stuff column)."""
    rows = ["Idx,Ratio,Train,Val,Stuff,Name"]
    for line in (ade / "objectInfo150.txt").read_text().splitlines()[1:]:
        idx, ratio, train, val, name = line.split("\t")
        rows.append(f'{idx},{ratio},{train},{val},0,"{name.replace(", ", ";")}"')
    (ade / "objectInfo150.txt").unlink()
    (ade / "objectInfo150.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("class_file", ["txt", "csv", "none"])
def test_ade20k_names_are_the_references_whichever_class_file_the_copy_has(ade, tmp_path, class_file):
    # Value 90's objectInfo150 row starts with another synonym; the reference names it `television receiver`.
    txt = (ade / "objectInfo150.txt").read_text()
    (ade / "objectInfo150.txt").write_text(txt.replace("thing90", "television, television receiver, tv"))
    if class_file == "csv":
        _objectinfo_csv(ade)
    elif class_file == "none":
        (ade / "objectInfo150.txt").unlink()
    label_path = ade / "annotations" / "training" / "ADE_train_00000003.png"
    label = _label(label_path).copy()
    label[: label.shape[0] // 4, : label.shape[1] // 4] = 90
    cv2.imwrite(str(label_path), label)
    _, records = build({"ade20k": ade}, tmp_path / "out", per_sample=8)
    pairs = [(n, rle) for r in records if "ADE_train_00000003" in r["id"]
             for n, rle in zip(r["targets"], r["masks"], strict=True)]
    tv = [rle for n, rle in pairs if n == "television receiver"]
    assert len(tv) == 1 and np.array_equal(decode_rle(tv[0]), (label == 90).astype(np.uint8))
    # Every name is the reference's (1 wall, 4 floor, 13 person, ...; the placeholders of the file are unused).
    names = {1: "wall", 4: "floor", 13: "person", 20: "chair", 23: "painting", 37: "lamp", 90: "television receiver",
             150: "flag"}
    assert {n for r in records for n in r["targets"]} <= set(names.values())


@pytest.mark.parametrize("labels_txt", [True, False])
def test_cocostuff_off_by_one_sky_and_dash_classes(tmp_path, labels_txt):
    root = gotcha_root(tmp_path)
    src = write_cocostuff(root / "cocostuff", root / "coco", seed=3, count=5, labels_txt=labels_txt)
    _, records = build({"cocostuff": src}, tmp_path / "out", per_sample=3)
    names = {n: v for v, n in enumerate(OFFICIAL_NAMES)}
    names["sky"] = 156
    asked = set()
    for rec in records:
        stem = rec["id"].split("/")[1]
        assert rec["image"] == f"train2017/{stem}.jpg" and (root / "coco" / rec["image"]).is_file()
        label = _label(src / "train2017" / f"{stem}.png")
        for name, rle in zip(rec["targets"], rec["masks"], strict=True):
            assert "-" not in name
            assert np.array_equal(decode_rle(rle), (label == names[name]).astype(np.uint8))
            asked.add((stem, name))
        dash = np.isin(label, [v for v, n in enumerate(OFFICIAL_NAMES) if "-" in n and n != "sky-other"])
        assert np.array_equal(decode_rle(rec["ignore"]), ((label == 255) | dash).astype(np.uint8))
    # Image 1 (000000000009): values 0 (person, not unlabeled), 95 building-other (ignored), 156 sky, 181 wood.
    assert {n for s, n in asked if s == "000000000009"} == {"person", "sky", "wood"}
    assert not any(s == "000000000025" for s, _ in asked)   # all 255


def test_cocostuff_value_out_of_range(cocostuff, tmp_path):
    path = cocostuff / "train2017" / "000000000030.png"
    label = _label(path).copy()
    label[1, 1] = 200
    cv2.imwrite(str(path), label)
    with pytest.raises(QASourceError, match=r"cocostuff/000000000030.*label value 200 is out of range"):
        build({"cocostuff": cocostuff}, tmp_path / "out")


def test_indexed_png_is_read_as_indices(cocostuff, tmp_path):
    path = cocostuff / "train2017" / "000000000009.png"
    label = _label(path)
    img = Image.fromarray(label, mode="L").convert("P")
    img.putpalette([(i * 37) % 256 for i in range(768)])
    img.save(path)
    assert Image.open(path).mode == "P"
    _, records = build({"cocostuff": cocostuff}, tmp_path / "out")
    first = next(r for r in records if r["id"].startswith("cocostuff/000000000009/"))
    assert np.array_equal(decode_rle(first["masks"][first["targets"].index("person")]), (label == 0).astype(np.uint8))
