"""What `reasonseg score` (a subprocess) makes of its predictions input. Ids the split lacks: the error counts every
such id (the streaming reader stopped at the first: always "1 prediction id(s)"), shows the first few, and names the
other split of the release when the file belongs to it (JSON without a split, COCO results list, PNG folder, zip).
A PNG folder or zip names no method: its name stands for it."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_one_line_error

from reasonseg import load_split
from reasonseg.sample import write_sample_release

EXE = str(Path(sys.executable).with_name("reasonseg"))


def run(*args, env):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("unknown-ids") / "release")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "COLUMNS": "400", "REASONSEG_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def predictions(release, tmp_path_factory, env):
    """The `full` method's predictions of val and test."""
    folder = tmp_path_factory.mktemp("preds")
    for split in ("val", "test"):
        done = run("predict", "--method", "full", release, "--split", split, "--out", folder / f"{split}.json",
                   env=env)
        assert done.returncode == 0, done.stderr
    return {split: json.loads((folder / f"{split}.json").read_text()) for split in ("val", "test")}


def _write_pngs(release: Path, split: str, folder: Path, archive: Path) -> None:
    """A PNG folder (every query of `split`, the whole image) and the same PNGs zipped."""
    folder.mkdir(parents=True)
    for sample in load_split(release, split):
        cv2.imwrite(str(folder / f"{sample.id}.png"), np.ones((sample.height, sample.width), np.uint8))
    with zipfile.ZipFile(archive, "w") as zipped:
        for png in sorted(folder.iterdir()):
            zipped.write(png, png.name)


def _write(doc, path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("wrong", [2, 4, 24])
def test_every_unknown_id_is_counted_and_the_first_are_named(release, predictions, env, tmp_path, wrong):
    doc = json.loads(json.dumps(predictions["val"]))
    assert len(doc["predictions"]) == 24
    renamed = []
    for k, entry in enumerate(doc["predictions"][:wrong]):
        entry["id"] = f"nosuch_{k:02d}"
        renamed.append(entry["id"])
    line = assert_one_line_error(run("score", release, _write(doc, tmp_path / "p.json"), "--split", "val",
                                     env=env), f"{wrong} prediction id(s) are not in split 'val'", renamed[0])
    for name in renamed[:5]:
        assert name in line
    assert all(name not in line for name in renamed[5:])
    if wrong > 5:
        assert f"({wrong - 5} more)" in line
    assert "nosuch" in line and "split 'test'" not in line


def test_a_file_of_another_split_is_named_as_such(release, predictions, env, tmp_path):
    test_ids = sorted({e["id"] for e in predictions["test"]["predictions"]})
    n = len(test_ids)
    # Our format without its "split" field, and the same masks as a COCO-style results list.
    ours = {k: v for k, v in predictions["test"].items() if k != "split"}
    coco = [{"image_id": e["id"], "segmentation": e["mask"]} for e in predictions["test"]["predictions"]]
    # A PNG folder and a zip of PNGs named after test's images.
    folder = tmp_path / "pngs"
    _write_pngs(release, "test", folder, tmp_path / "pngs.zip")
    for path in (_write(ours, tmp_path / "ours.json"), _write(coco, tmp_path / "coco.json"), folder,
                 tmp_path / "pngs.zip"):
        assert_one_line_error(run("score", release, path, "--split", "val", env=env),
                              f"{n} prediction id(s) are not in split 'val'", test_ids[0], "ids of split 'test'")
        assert run("score", release, path, "--split", "test", "--bootstrap", "0", env=env).returncode == 0
    # A name that is not a plain file name is never looked up, so a mix is not taken for another split.
    mixed = coco[:1] + [{"image_id": "../val/" + test_ids[0], "segmentation": coco[0]["segmentation"]}]
    line = assert_one_line_error(run("score", release, _write(mixed, tmp_path / "mixed.json"), "--split", "val",
                                     env=env), "2 prediction id(s)")
    assert "ids of split" not in line


def test_a_png_folder_or_zip_is_scored_under_its_name(release, env, tmp_path):
    # Before: `method: null`, and `table` made one row per results file (named after the file) for one method.
    for split in ("val", "test"):
        _write_pngs(release, split, tmp_path / split / "my-method", tmp_path / split / "zipped-method.zip")
        for path, name in ((tmp_path / split / "my-method", "my-method"),
                           (tmp_path / split / "zipped-method.zip", "zipped-method")):
            out = tmp_path / f"{name}-{split}.results.json"
            done = run("score", release, path, "--split", split, "--bootstrap", "0", "--out", out, env=env)
            assert done.returncode == 0, done.stderr
            assert json.loads(out.read_text())["method"] == name
    named = tmp_path / "named.results.json"
    assert run("score", release, tmp_path / "val" / "my-method", "--split", "val", "--bootstrap", "0", "--method",
               "given", "--out", named, env=env).returncode == 0
    assert json.loads(named.read_text())["method"] == "given"        # --method still wins
    done = run("table", *sorted(tmp_path.glob("my-method-*.results.json")), env=env)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("|") and "my-method" in line]
    assert len(rows) == 1 and "results" not in rows[0]               # one method, one row with val and test
