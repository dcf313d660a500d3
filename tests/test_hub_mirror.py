"""The Hub mirrors' layout (Seg-Zero / VisionReasoner): `publish --layout seg-zero` writes what their loaders read,
every form of it reads back as a data source, and its ground truth is the mirror's own: the per-query I/U that
Seg-Zero's mirror (made by its own script) gives on the peer-scorers fixture."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

from reasonseg.dataset import load_split
from reasonseg.masks import decode_rle, rasterize_shapes
from reasonseg.metrics.groundtruth import load_ground_truth

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

FIXTURE = Path(__file__).parent / "metrics" / "fixtures" / "peer-scorers"
EXE = str(Path(sys.executable).with_name("reasonseg"))


def run(*args, env=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)


def mirror_features():
    """The features Seg-Zero's create_reasonseg_hf.py gives the mirrors, written out here independently."""
    from datasets import Features, Image, Sequence, Value

    return Features({"image": Image(), "mask": Sequence(Sequence(Value("bool"))), "text": Value("string"),
                     "image_id": Value("string"), "ann_id": Value("string"), "img_height": Value("int64"),
                     "img_width": Value("int64")})


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONSEG_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    """The fixture release (val only) published in the seg-zero layout, and its text-0 predictions (the only
    text a mirror keeps)."""
    root = tmp_path_factory.mktemp("mirror")
    proc = run("publish", FIXTURE / "release", "--out", root / "out", "--layout", "seg-zero")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((FIXTURE / "predictions.json").read_text())
    doc["predictions"] = [p for p in doc["predictions"] if p["text_index"] == 0]
    (root / "text0.json").write_text(json.dumps(doc))
    return root / "out", root / "text0.json"


def _queries(proc) -> list:
    assert proc.returncode == 0, proc.stderr
    return [(q["id"], q["text_index"], q["intersection"], q["union"]) for q in json.loads(proc.stdout)["queries"]]


def test_the_layout_loads_with_datasets_into_the_mirrors_features(mirrors, tmp_path):
    out, _ = mirrors
    assert sorted(p.name for p in out.iterdir()) == ["ReasonSeg_val"]    # the fixture release has val only
    folder = out / "ReasonSeg_val"
    assert [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.parquet"))] == [
        "data/test-00000-of-00001.parquet"]
    cache = str(tmp_path / "hf")    # given: `datasets` reads HF_DATASETS_CACHE only once, at import
    ds = datasets.load_dataset(str(folder), split="test", cache_dir=cache)     # as Seg-Zero's evaluation.py does
    assert ds.features == mirror_features()
    flat = datasets.load_dataset("parquet", data_files=str(folder / "data" / "*.parquet"), split="train",
                                 cache_dir=cache)
    assert flat.features == mirror_features()
    samples = {s.id: s for s in load_split(FIXTURE / "release", "val")}
    json_names = sorted(p.name for p in (FIXTURE / "release" / "val").glob("*.json"))
    assert [f"{i}.json" for i in ds["image_id"]] == json_names          # one row per annotation file, sorted
    assert ds["ann_id"] == ds["image_id"]
    for row in ds:
        sample = samples[row["image_id"]]
        assert row["text"] == sample.texts[0]
        assert row["image"].size == (row["img_width"], row["img_height"]) == (sample.width, sample.height)
        drawn = rasterize_shapes(sample.shapes, sample.height, sample.width)
        assert np.array_equal(np.array(row["mask"], bool), drawn != 0)   # ignore (255) became target
    assert any((rasterize_shapes(s.shapes, s.height, s.width) == 255).any() for s in samples.values())

    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    assert datasets.load_from_disk(str(tmp_path / "saved"))["test"].features == mirror_features()


def test_the_mirror_ground_truth_is_seg_zeros(mirrors, tmp_path):
    """The fixture's visionreasoner queries were scored by VisionReasoner's code against a mirror made by
    Seg-Zero's own script: the same I and U come out of the mirror reasonseg writes and reads."""
    out, text0 = mirrors
    gt = load_ground_truth(out, "val", cache_dir=None)
    assert gt.form == "hub-mirror" and len(gt.masks) == 40
    assert all(m.is_sentence is None and len(m.texts) == 1 and m.ignore[0].size == 0 for m in gt.masks.values())
    cold, warm = (load_ground_truth(out, "val", cache_dir=tmp_path / "gt") for _ in range(2))
    assert len(list((tmp_path / "gt").glob("gt-*.npz"))) == 1       # written once, then read
    for again in (cold, warm):
        assert again.form == "hub-mirror" and again.fingerprint == gt.fingerprint
        assert all(np.array_equal(again.masks[k].target[0], m.target[0]) for k, m in gt.masks.items())
    expected = json.loads((FIXTURE / "expected.json").read_text())["queries"]["visionreasoner"]["predictions.json"]
    proc = run("score", out, text0, "--split", "val", "--bootstrap", "0", "--json")
    assert sorted(_queries(proc)) == sorted((q["id"], q["text_index"], q["intersection"], q["union"])
                                            for q in expected)


def test_the_same_predictions_score_alike_from_the_mirror_and_from_the_release(mirrors):
    """Per query, I and U from the mirror equal those against the release's target and ignore pixels together,
    computed here from the predictions' own RLE."""
    out, text0 = mirrors
    samples = {s.id: s for s in load_split(FIXTURE / "release", "val")}
    expected = []
    for p in json.loads(text0.read_text())["predictions"]:
        s = samples[p["id"]]
        truth = rasterize_shapes(s.shapes, s.height, s.width) != 0
        pred = decode_rle(p["mask"]).astype(bool)
        expected.append((p["id"], 0, int((pred & truth).sum()), int((pred | truth).sum())))
    assert sorted(_queries(run("score", out, text0, "--split", "val", "--bootstrap", "0", "--json"))) == \
        sorted(expected)


def test_every_form_of_the_mirror_reads_alike(mirrors, tmp_path):
    """The folder `publish` wrote, one mirror folder, `save_to_disk`'s layout and a Hub id in the local cache."""
    out, text0 = mirrors
    saved, single = tmp_path / "saved", tmp_path / "single"
    loaded = datasets.load_dataset(str(out / "ReasonSeg_val"), cache_dir=str(tmp_path / "hf"))
    loaded.save_to_disk(str(saved))                 # a DatasetDict: dataset_dict.json + test/
    loaded["test"].save_to_disk(str(single))        # one Dataset: state.json + data-*.arrow
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "datasets--someone--ReasonSeg_val"
    shutil.copytree(out / "ReasonSeg_val", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    results = [_queries(run("score", data, text0, "--split", "val", "--bootstrap", "0", "--json", env=env))
               for data in (out, out / "ReasonSeg_val", saved, single, "someone/ReasonSeg_val")]
    assert len(results[0]) == 40 and all(r == results[0] for r in results)


def test_the_mirror_cannot_be_read_as_a_release(mirrors):
    out, _ = mirrors
    assert_one_line_error(run("validate", out), "Hub mirror", "not read as a release")


def _hostile(out: Path, tmp_path: Path, change) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(out / "ReasonSeg_val", bad)
    path = bad / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()[:3]
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return bad


@pytest.mark.parametrize("case, parts", [
    ("a row too few", ("'mask' has", "rows, img_height is")),
    ("a short row", ("is not", "values long (img_width)")),
    ("absurd size", ("is not an image size", "img_height")),
    ("more values than the sizes", ("stores", "mask values, more than")),
    ("duplicate id", ("share this image_id",)),
])
def test_hostile_mirror_rows_are_one_line(mirrors, tmp_path, case, parts):
    out, text0 = mirrors

    def change(rows):
        if case == "a row too few":
            rows[0]["mask"] = rows[0]["mask"][:-1]
        elif case == "a short row":
            rows[1]["mask"][3] = rows[1]["mask"][3][:-1]
        elif case == "absurd size":
            rows[0]["img_height"] = rows[0]["img_width"] = 10**9
        elif case == "more values than the sizes":
            rows[2]["img_height"], rows[2]["img_width"] = 1, 1
        else:
            rows[1]["image_id"] = rows[0]["image_id"]

    bad = _hostile(out, tmp_path, change)
    assert_one_line_error(run("score", bad, text0, "--split", "val", "--bootstrap", "0"), *parts)


def test_a_missing_mirror_column_is_one_line(mirrors, tmp_path):
    out, text0 = mirrors
    bad = tmp_path / "bad" / "data"
    bad.mkdir(parents=True)
    table = pq.read_table(out / "ReasonSeg_val" / "data" / "test-00000-of-00001.parquet")
    pq.write_table(table.drop_columns(["img_width"]), bad / "test-00000-of-00001.parquet")
    assert_one_line_error(run("score", bad.parent, text0, "--split", "val", "--bootstrap", "0"), "is missing")


# ---------------------------------------------------------------------------------------------------- X-SAM dumps

def _xsam_dump(doc: dict) -> list:
    return [{"image_id": f"{p['id']}.jpg", "sample_id": p["text_index"], "pred_mask": p["mask"]}
            for p in doc["predictions"]]


def test_an_xsam_dump_scores_like_our_own_file(tmp_path):
    ours = FIXTURE / "predictions.json"
    dump = tmp_path / "xsam.json"
    dump.write_text(json.dumps(_xsam_dump(json.loads(ours.read_text()))))
    for protocol in ("lisa", "all-texts"):
        args = ("--split", "val", "--bootstrap", "0", "--json", "--protocol", protocol)
        a = run("score", FIXTURE / "release", ours, *args)
        b = run("score", FIXTURE / "release", dump, *args)
        assert _queries(a) == _queries(b)
        assert json.loads(a.stdout)["groups"] == json.loads(b.stdout)["groups"]
    assert len(_queries(b)) == 71      # every text of every image, each mapped by its sample_id


@pytest.mark.parametrize("defect", ["unknown id", "bad RLE", "wrong size", "duplicate", "text index"])
def test_an_xsam_dump_gets_our_one_line_errors(tmp_path, defect):
    doc = json.loads((FIXTURE / "predictions.json").read_text())
    first = doc["predictions"][0]
    if defect == "unknown id":
        first["id"] = "not-in-the-split"
    elif defect == "bad RLE":
        first["mask"] = {"size": first["mask"]["size"], "counts": "@@@@"}
    elif defect == "wrong size":
        first["mask"] = {"size": [7, 9], "counts": "0"}
    elif defect == "duplicate":
        doc["predictions"].append(dict(first))
    else:
        first["text_index"] = 9
    ours, dump = tmp_path / "ours.json", tmp_path / "xsam.json"
    ours.write_text(json.dumps(doc))
    dump.write_text(json.dumps(_xsam_dump(doc)))
    args = ("--split", "val", "--bootstrap", "0", "--protocol", "all-texts")
    a = assert_one_line_error(run("score", FIXTURE / "release", ours, *args))
    b = assert_one_line_error(run("score", FIXTURE / "release", dump, *args))
    message = a.rsplit(": ", 1)[-1]
    assert message in b, (a, b)


def test_a_malformed_xsam_record_is_one_line(tmp_path):
    dump = tmp_path / "xsam.json"
    dump.write_text(json.dumps([{"image_id": "x.jpg", "pred_mask": {"size": [1, 1], "counts": "1"}}]))
    assert_one_line_error(run("score", FIXTURE / "release", dump, "--split", "val"), "sample_id", "X-SAM")


def test_publish_layout_errors_are_one_line(tmp_path):
    release = FIXTURE / "release"
    assert_one_line_error(run("publish", release, "--out", tmp_path / "a", "--layout", "nope"), "--layout 'nope'",
                          "seg-zero")
    assert_one_line_error(run("publish", release, "--out", tmp_path / "b", "--layout", "seg-zero", "--push",
                              "--repo-id", "me/x"), "--push", "ReasonSeg_<split>/")
    bare = tmp_path / "bare"
    shutil.copytree(release, bare)
    first = sorted((bare / "val").glob("*.json"))[0]
    first.write_text(json.dumps({**json.loads(first.read_text()), "text": []}))
    assert_one_line_error(run("publish", bare, "--out", tmp_path / "c", "--layout", "seg-zero"), first.stem,
                          "first one")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_split_larger_than_any_real_one_is_refused_before_decoding(mirrors, monkeypatch):
    from reasonseg import hub_mirror
    from reasonseg.errors import DatasetError

    out, _ = mirrors
    files = hub_mirror.mirror_files(out / "ReasonSeg_val")
    monkeypatch.setattr(hub_mirror, "MAX_SPLIT_PIXELS", 1000)
    decoded = []
    monkeypatch.setattr(hub_mirror, "_decoded_mask", lambda *args: decoded.append(args))
    with pytest.raises(DatasetError, match="add up to over 1000 pixels"):
        hub_mirror.read_mirror(files)
    assert not decoded


@pytest.mark.parametrize("rules", ["visionreasoner", "seg-zero"])
def test_the_mirror_and_the_release_score_alike_under_the_mirrors_rules(mirrors, rules):
    """Under the rules of the peers that score against the mirror, the release and the mirror reasonseg wrote give
    the same numbers, and those are the numbers the peers' own code gave (the fixture's expected.json)."""
    out, text0 = mirrors
    expected = json.loads((FIXTURE / "expected.json").read_text())["rules"][rules]["predictions.json"]
    groups = []
    for data in (FIXTURE / "release", out):
        proc = run("score", data, text0, "--split", "val", "--bootstrap", "0", "--rules", rules, "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["rules"] == rules
        groups.append(doc["groups"]["overall"])
    assert groups[0] == groups[1]
    assert groups[1]["giou"] == pytest.approx(expected["giou"], abs=1e-6)
    if expected["ciou"] is not None:
        assert groups[1]["ciou"] == pytest.approx(expected["ciou"], abs=1e-6)


def test_an_exif_rotated_image_keeps_the_size_pil_reports(tmp_path):
    """The mirrors took the size from PIL, which does not apply EXIF orientation (LISA's cv2.imread does): the row
    says so, and its mask is drawn at that size."""
    from PIL import Image

    release = tmp_path / "release"
    shutil.copytree(FIXTURE / "release", release)
    path = next(p for p in sorted((release / "val").glob("*.jpg")) if Image.open(p).size[0] != Image.open(p).size[1])
    with Image.open(path) as img:
        exif = Image.Exif()
        exif[0x0112] = 6                        # rotate 90 degrees on display: width and height swap
        img.save(path, "JPEG", exif=exif)
        raw_width, raw_height = img.size
    sample = next(s for s in load_split(release, "val") if s.id == path.stem)
    assert (sample.height, sample.width) == (raw_width, raw_height)   # the release reader applies the rotation
    proc = run("publish", release, "--out", tmp_path / "out", "--layout", "seg-zero")
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(tmp_path / "out" / "ReasonSeg_val" / "data" / "test-00000-of-00001.parquet").to_pylist()
    row = next(r for r in rows if r["image_id"] == path.stem)
    assert (row["img_height"], row["img_width"]) == (raw_height, raw_width)
    drawn = rasterize_shapes(sample.shapes, raw_height, raw_width) != 0
    assert np.array_equal(np.array(row["mask"], bool), drawn)
