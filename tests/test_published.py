"""The published (Parquet) form read back: export-release byte for byte, and scoring, validating and predicting on
a published folder or a cached Hub dataset with the numbers of the folder form."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

from reasonseg.builders.publish import parquet_name, publish_release
from reasonseg.errors import DatasetError
from reasonseg.masks import encode_rle, rasterize_shapes
from reasonseg.metrics.scoring import evaluate
from reasonseg.published import export_release
from reasonseg.sample import write_sample_release
from reasonseg.schema import SPLITS, Prediction
from reasonseg.sources import load_split, release_root
from reasonseg.submission import write_predictions

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
EXE = str(Path(sys.executable).with_name("reasonseg"))
COUNTS = {"train": 4, "val": 4, "test": 5}  # holds a cp1252 annotation (val) and one without shapes (test)


def run(*args, env=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)


def _numbers(proc) -> tuple:
    doc = json.loads(proc.stdout)
    return doc["split"], doc["groups"], doc["queries"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONSEG_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """A release (public layout, defects included), its published folder, and noisy predictions per split."""
    root = tmp_path_factory.mktemp("forms")
    release = write_sample_release(root / "release", counts=COUNTS)
    publish_release(release, root / "hub")
    rng = np.random.default_rng(0)
    predictions = {}
    for split in SPLITS:
        preds = []
        for s in load_split(release, split):
            gt = rasterize_shapes(s.shapes, s.height, s.width) == 1
            noise = rng.random(gt.shape) < 0.05
            preds.append(Prediction(s.id, 0, encode_rle(np.logical_xor(gt, noise))))
        predictions[split] = write_predictions(root / f"{split}.json", preds, split, "noisy")
    return release, root / "hub", predictions


def test_export_release_is_byte_identical(forms, tmp_path):
    release, hub, _ = forms
    proc = run("export-release", hub, "--out", tmp_path / "back")
    assert proc.returncode == 0, proc.stderr
    original = {p.relative_to(release).as_posix(): p.read_bytes() for p in release.rglob("*") if p.is_file()}
    restored = {p.relative_to(tmp_path / "back").as_posix(): p.read_bytes()
                for p in (tmp_path / "back").rglob("*") if p.is_file()}
    assert restored.keys() == original.keys()
    assert all(restored[k] == original[k] for k in original)  # cp1252 and shape-less annotations included
    assert any(b"na\xefve" in data for data in original.values())

    again = run("export-release", hub, "--out", tmp_path / "back")
    assert_one_line_error(again, "not empty", "--overwrite")
    assert_one_line_error(run("export-release", release, "--out", tmp_path / "x"), "not a published ReasonSeg folder")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("split", ["val", "validation", "test"])
def test_scores_from_the_published_form_equal_the_folder_form(forms, split):
    release, hub, predictions = forms
    folder_split = "val" if split == "validation" else split
    a = evaluate(release, predictions[folder_split], folder_split, bootstrap=0)
    b = evaluate(hub, predictions[folder_split], split, bootstrap=0)
    assert [(s.id, s.intersection, s.union) for s in a.scores] == [(s.id, s.intersection, s.union)
                                                                   for s in b.scores]
    for key in ("groups", "queries"):
        assert a.document[key] == b.document[key]  # equal to the last bit
    assert a.document["split"] == b.document["split"] == folder_split
    assert a.document["dataset"]["annotations_sha256"] == b.document["dataset"]["annotations_sha256"]


def test_cli_score_validate_predict_on_the_published_folder(forms, tmp_path):
    release, hub, predictions = forms
    env = {**os.environ, "REASONSEG_CACHE": str(tmp_path / "cache")}
    folder = run("score", release, predictions["val"], "--split", "val", "--bootstrap", "0", "--json", env=env)
    published = run("score", hub, predictions["val"], "--split", "validation", "--bootstrap", "0", "--json", env=env)
    assert folder.returncode == 0 and published.returncode == 0, published.stderr
    assert _numbers(folder) == _numbers(published)
    reports = {}
    for data, split in ((release, "val"), (hub, "validation")):
        proc = run("score", data, predictions["val"], "--split", split, "--bootstrap", "0", "--report",
                   tmp_path / f"report-{split}", env=env)
        assert proc.returncode == 0, proc.stderr
        reports[split] = {p.relative_to(tmp_path / f"report-{split}"): p.read_bytes()
                          for p in (tmp_path / f"report-{split}").rglob("*") if p.is_file() and p.suffix != ".html"}
    assert reports["val"] and reports["val"] == reports["validation"]  # the images are found in both forms

    proc = run("validate", hub, "--json", env=env)
    report = json.loads(proc.stdout)
    assert report["ok"] and {k: v["count"] for k, v in report["splits"].items()} == COUNTS
    assert report["splits"]["test"]["empty_gt"] == 1 and report["splits"]["val"]["cp1252"] == 1

    out = {}
    for data, split in ((release, "val"), (hub, "validation")):
        target = tmp_path / f"{split}.json"
        proc = run("predict", data, "--method", "center-prior", "--split", split, "--out", target, env=env)
        assert proc.returncode == 0, proc.stderr
        out[split] = json.loads(target.read_text())
    assert out["val"]["predictions"] == out["validation"]["predictions"] and out["validation"]["split"] == "val"


def test_a_hub_dataset_in_the_local_cache_is_read_without_download(forms, tmp_path):
    """The Hub's own cache layout (datasets--owner--name/snapshots/<commit>, refs/main), as `hf download` leaves
    it, read through huggingface_hub with the network off."""
    release, hub, predictions = forms
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "datasets--someone--reasonseg"
    shutil.copytree(hub, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "REASONSEG_CACHE": str(tmp_path / "cache")}
    folder = run("score", release, predictions["test"], "--split", "test", "--bootstrap", "0", "--json", env=env)
    cached = run("score", "someone/reasonseg", predictions["test"], "--split", "test", "--bootstrap", "0", "--json",
                 env=env)
    assert cached.returncode == 0, cached.stderr
    assert _numbers(folder) == _numbers(cached)
    proc = run("export-release", "hf://datasets/someone/reasonseg", "--out", tmp_path / "back", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "back" / "val").is_dir()
    assert_one_line_error(run("score", "nobody/absent", predictions["test"], "--split", "test", env=env),
                          "nobody/absent", "local Hugging Face cache", "hf download")


def _hostile(hub: Path, tmp_path: Path, split: str, change) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(hub, bad)
    path = bad / parquet_name(split)
    table = pq.read_table(path)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return bad


@pytest.mark.parametrize("case, field", [
    ("traversal id", "id"),
    ("traversal image path", "image.path"),
    ("image path of another id", "image.path"),
    ("duplicate id", "id"),
    ("no annotation", "annotation"),
])
def test_hostile_published_rows_are_refused(forms, tmp_path, case, field):
    _, hub, _ = forms

    def change(rows):
        if case == "traversal id":
            rows[0]["id"] = "../../escaped"
        elif case == "traversal image path":
            rows[0]["image"]["path"] = "../../" + rows[0]["image"]["path"]
        elif case == "image path of another id":
            rows[0]["image"]["path"] = rows[1]["image"]["path"]
        elif case == "duplicate id":
            rows[1]["id"], rows[1]["image"]["path"] = rows[0]["id"], rows[0]["image"]["path"]
        else:
            rows[0]["annotation"] = None

    bad = _hostile(hub, tmp_path, "test", change)
    with pytest.raises(DatasetError) as err:
        export_release(bad, tmp_path / "out")
    assert err.value.field == field
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("escaped*"))
    assert not any(p.name.startswith("escaped") for p in tmp_path.rglob("*"))


def test_a_file_that_is_not_parquet_is_one_line(forms, tmp_path):
    release, hub, predictions = forms
    bad = tmp_path / "bad"
    shutil.copytree(hub, bad)
    (bad / parquet_name("val")).write_bytes(b"PAR1 not really")
    env = {**os.environ, "REASONSEG_CACHE": str(tmp_path / "cache")}
    assert_one_line_error(run("score", bad, predictions["val"], "--split", "val", env=env),
                          "not a readable Parquet file", "validation-00000-of-00001.parquet")


def test_without_pyarrow_the_published_form_asks_for_the_hub_extra(forms, tmp_path):
    """The scoring core imports no pyarrow; reading Parquet without it is one line naming the extra."""
    release, hub, predictions = forms
    code = ("import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None; "
            "import reasonseg.metrics.scoring, reasonseg.dataset, reasonseg.published, reasonseg.submission; "
            "from reasonseg.cli import main; sys.argv = ['reasonseg'] + sys.argv[1:]; main()")
    env = {**os.environ, "REASONSEG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code, "score", str(hub), str(predictions["val"]), "--split", "val"],
                          capture_output=True, text=True, env=env)
    assert_one_line_error(proc, "pip install 'reasonseg[hub]'", "pyarrow")
    proc = subprocess.run([sys.executable, "-c", code, "score", str(release), str(predictions["val"]), "--split",
                           "val", "--bootstrap", "0"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr  # the folder form scores without pyarrow
    probe = subprocess.run([sys.executable, "-c", "import sys, reasonseg.metrics.scoring, reasonseg.dataset, "
                            "reasonseg.published; print('pyarrow' in sys.modules)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stderr


def test_release_root_leaves_a_release_folder_alone(forms):
    release, hub, _ = forms
    assert release_root(release) == release
    resolved = release_root(hub)
    assert resolved != hub and (resolved / "val").is_dir()
    assert release_root(hub) == resolved  # written once, then reused
    assert resolved.parent.stat().st_mode & 0o077 == 0  # owner-only, like the ground-truth cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [s.id for s in load_split(hub, "validation")] == [s.id for s in load_split(release, "val")]


def test_a_predictions_file_naming_the_hub_split_scores_as_val(forms, tmp_path):
    """A file written for the Hub form says `"split": "validation"`: it is the `val` split, in both forms."""
    release, hub, predictions = forms
    doc = json.loads(Path(predictions["val"]).read_text())
    renamed = tmp_path / "validation.json"
    renamed.write_text(json.dumps({**doc, "split": "validation"}))
    expected = _numbers(run("score", release, predictions["val"], "--split", "val", "--bootstrap", "0", "--json"))
    for data, split in ((release, "val"), (hub, "validation"), (release, None)):
        args = ("--split", split) if split else ()
        proc = run("score", data, renamed, *args, "--bootstrap", "0", "--json")
        assert proc.returncode == 0, proc.stderr
        assert _numbers(proc) == expected
    wrong = run("score", release, renamed, "--split", "test", "--bootstrap", "0")
    assert wrong.returncode == 2 and "'validation'" in wrong.stderr and "'test'" in wrong.stderr


def test_the_datasets_save_to_disk_form_scores_the_same(forms, tmp_path):
    """`datasets.load_dataset(folder).save_to_disk(...)` (Arrow files, no manifest beside them) reads back as the
    published form: the same numbers, the same annotations fingerprint."""
    datasets = pytest.importorskip("datasets")
    release, hub, predictions = forms
    # cache_dir given: `datasets` reads HF_DATASETS_CACHE once, at import, and may hand back another folder's build
    datasets.load_dataset(str(hub), cache_dir=str(tmp_path / "hf")).save_to_disk(str(tmp_path / "saved"))
    expected = run("score", release, predictions["test"], "--split", "test", "--bootstrap", "0", "--json")
    saved = run("score", tmp_path / "saved", predictions["test"], "--split", "test", "--bootstrap", "0", "--json")
    assert saved.returncode == 0, saved.stderr
    assert _numbers(saved) == _numbers(expected)
    fingerprints = [json.loads(p.stdout)["dataset"]["annotations_sha256"] for p in (expected, saved)]
    assert fingerprints[0] == fingerprints[1]
    assert (export_release(tmp_path / "saved", tmp_path / "back")["splits"]) == COUNTS
