"""The scorer's commands as a user runs them (subprocesses): table, the different-data guard of compare and
report, the hints given when predictions are read, COCO results lists, and the warnings of `score`."""
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_one_line_error, write_release
from PIL import Image

from reasonseg.dataset import load_split
from reasonseg.masks import encode_rle, rasterize_shapes
from reasonseg.sample import write_sample_release
from reasonseg.schema import TARGET
from reasonseg.submission import prediction_from_mask, write_predictions

EXE = str(Path(sys.executable).with_name("reasonseg"))


def run(*args, env):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "REASONSEG_CACHE": str(tmp_path_factory.mktemp("cache")), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, env):
    """A release, two methods' predictions and their results files on val."""
    work = tmp_path_factory.mktemp("scorer")
    release = write_sample_release(work / "release", counts={"val": 12, "test": 0, "train": 0})
    rng = np.random.default_rng(0)
    good, poor = [], []
    for s in load_split(release, "val"):
        target = rasterize_shapes(s.shapes, s.height, s.width) == TARGET
        good.append(prediction_from_mask(s.id, 0, np.roll(target, 3, axis=1)))
        poor.append(prediction_from_mask(s.id, 0, np.roll(target, 40, axis=0) | (rng.random(target.shape) < .1)))
    paths = {}
    for name, preds in (("good", good), ("poor_&_co", poor)):
        write_predictions(work / f"{name}.json", preds, "val", name)
        proc = run("score", release, work / f"{name}.json", "--split", "val", "--out", work / f"{name}-r.json",
                   "--bootstrap", "100", env=env)
        assert proc.returncode == 0, proc.stderr
        paths[name] = work / f"{name}-r.json"
    return release, paths, work


def test_table_csv_matches_the_results(scored, env):
    _, paths, _ = scored
    proc = run("table", paths["good"], paths["poor_&_co"], "--format", "csv", "--paper", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    doc = json.loads(paths["good"].read_text())
    good = next(r for r in rows if r["method"] == "good")
    assert good["val gIoU"] == f"{100 * doc['groups']['overall']['giou']:.1f}"
    assert good["val cIoU"] == f"{100 * doc['groups']['overall']['ciou']:.1f}"
    lisa = next(r for r in rows if r["method"] == "LISA-7B (ft)")
    assert (lisa["val gIoU"], lisa["val cIoU"], lisa["source"]) == ("52.9", "54.0", "reported")
    assert [r["source"] for r in rows[:2]] == ["measured", "measured"]


def test_table_markdown_renders_as_a_table(scored, env):
    from markdown_it import MarkdownIt

    _, paths, _ = scored
    proc = run("table", *paths.values(), "--ci", env=env)
    assert proc.returncode == 0, proc.stderr
    page = MarkdownIt("commonmark").enable("table").render(proc.stdout)
    assert page.count("<tr>") == 3 and ">val gIoU</th>" in page and ">poor_&amp;_co</td>" in page
    doc = json.loads(paths["good"].read_text())
    low, high = doc["groups"]["overall"]["giou_ci"]
    assert f"[{100 * low:.1f}, {100 * high:.1f}]" in page


def test_table_latex_escapes_and_spans_columns(scored, env, tmp_path):
    _, paths, _ = scored
    out = tmp_path / "t1.tex"
    proc = run("table", *paths.values(), "--format", "latex", "--paper", "--out", out, env=env)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert r"poor\_\&\_co &" in text                      # the method name, escaped
    assert r"\multicolumn{2}{c}{val}" in text and r"\textit{reported in the paper}" in text
    body = [line for line in text.splitlines() if line.endswith(r"\\") and "&" in line and "multicolumn" not in line]
    assert len(body) == 2 + 15 + 1 and all(len(re.findall(r"(?<!\\)&", line)) == 2 for line in body)
    assert_one_line_error(run("table", tmp_path / "nope.json", env=env), "nope.json")


def test_compare_and_report_refuse_results_of_other_data(scored, env, tmp_path):
    release, paths, _ = scored
    other = tmp_path / "other"
    shutil.copytree(release, other)
    changed = sorted((other / "val").glob("*.json"))[0]
    raw = changed.read_bytes()
    changed.write_bytes(raw.replace(b'"is_sentence": false', b'"is_sentence": true')
                        if b'"is_sentence": false' in raw else raw.replace(b'"is_sentence": true',
                                                                           b'"is_sentence": false'))
    theirs = json.loads(paths["good"].read_text())["dataset"]["annotations_sha256"]
    proc = run("compare", other, paths["good"], paths["poor_&_co"], "--split", "val", env=env)
    assert_one_line_error(proc, "different data", theirs, "--allow-different-data")
    line = proc.stderr.strip()
    assert line.count("sha256:") == 2                     # both hashes named
    proc = run("compare", other, paths["good"], paths["poor_&_co"], "--split", "val", "--json",
               "--allow-different-data", "--bootstrap", "50", env=env)
    assert proc.returncode == 0 and "different data" in proc.stderr
    assert json.loads(proc.stdout)["differences"][0]["delta"] < 0
    assert_one_line_error(run("report", other, *paths.values(), "--out", tmp_path / "rep", env=env), theirs)
    assert not (tmp_path / "rep").exists()                # nothing half-written
    proc = run("report", other, *paths.values(), "--out", tmp_path / "rep2", "--allow-different-data",
               "--resamples", "50", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Scored on other data" in (tmp_path / "rep2" / "index.html").read_text()
    # The release they were scored on passes.
    assert run("compare", release, *paths.values(), "--split", "val", "--bootstrap", "50",
               env=env).returncode == 0


def _tiny_release(root: Path, exif_rotated: bool) -> Path:
    square = {"label": "target", "points": [[2, 2], [12, 2], [12, 8], [2, 8]]}
    write_release(root, "val", {"a": {"text": ["x", "y"], "is_sentence": False, "shapes": [square]}},
                  {"a": (20, 30)})
    if exif_rotated:
        image = Image.fromarray(np.full((20, 30, 3), 127, np.uint8))
        exif = Image.Exif()
        exif[0x0112] = 6                    # rotate 90°: cv2.imread (and the ground truth) see 30 x 20
        image.save(root / "val" / "a.jpg", exif=exif.tobytes())
    return root


@pytest.mark.parametrize("exif_rotated", [False, True])
def test_a_swapped_size_gets_the_right_hint(tmp_path, env, exif_rotated):
    release = _tiny_release(tmp_path / "rel", exif_rotated)
    h, w = (30, 20) if exif_rotated else (20, 30)
    folder = tmp_path / "png"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((w, h), np.uint8))      # height and width swapped
    proc = run("score", release, folder, "--split", "val", env=env)
    assert_one_line_error(proc, "'a'", f"mask size {w}x{h}", "EXIF" if exif_rotated else "transposed")
    assert "resize the mask" not in proc.stderr
    cv2.imwrite(str(folder / "a.png"), np.zeros((h + 1, w), np.uint8))  # a plain size mismatch
    assert_one_line_error(run("score", release, folder, "--split", "val", env=env), "resize the mask to it")


def test_coco_results_lists_are_read_with_image_id_as_sample_id(tmp_path, env):
    release = _tiny_release(tmp_path / "rel", False)
    mask = np.zeros((20, 30), np.uint8)
    mask[2:9, 2:13] = 1
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps([{"image_id": "a", "category_id": 1, "score": 0.9,
                                 "segmentation": encode_rle(mask)}]))
    proc = run("score", release, coco, "--split", "val", "--json", "--bootstrap", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["groups"]["overall"]["giou"] == pytest.approx(1.0, abs=1e-4)
    coco.write_text(json.dumps([{"image_id": "a", "segmentation": encode_rle(mask)},
                                {"image_id": "a", "segmentation": encode_rle(mask)}]))
    assert_one_line_error(run("score", release, coco, "--split", "val", env=env), "duplicate")


def test_score_notes_unscored_texts_and_degenerate_predictions(tmp_path, env):
    release = _tiny_release(tmp_path / "rel", False)
    preds = [prediction_from_mask("a", 0, np.ones((20, 30), bool)), prediction_from_mask("a", 1, np.ones((20, 30)))]
    write_predictions(tmp_path / "p.json", preds, "val", "full")
    proc = run("score", release, tmp_path / "p.json", "--split", "val", "--bootstrap", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "1 prediction(s) for text_index > 0 are not scored" in proc.stderr
    assert "1 of 1 queries are predicted as the whole image" in proc.stderr
    proc = run("score", release, tmp_path / "p.json", "--split", "val", "--bootstrap", "0", "--protocol",
               "all-texts", env=env)
    assert proc.returncode == 0 and "not scored" not in proc.stderr
