"""`reasonseg lisa eval refcoco|refcoco+|refcocog`: the paper's referring-segmentation evaluation, end to end through
the CLI (a subprocess) on the synthetic refCOCO-format source that `reasonseg sample` writes, with a tiny random LISA
written by `reasonseg lisa init` and loaded like a released checkpoint."""
import functools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import scratch  # noqa: E402

from reasonseg.lisa.runner import refer_split_matches  # noqa: E402
from reasonseg.paper import PAPER_TABLE2  # noqa: E402

CLI = [str(Path(sys.executable).parent / "reasonseg")]  # the installed command
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=600)


@functools.cache
def _fixtures() -> tuple[Path, Path]:
    """(refer_seg root of `reasonseg sample`, tiny LISA of `reasonseg lisa init`), both through the CLI."""
    root = scratch("refer-eval")
    done = _run("sample", "--out", str(root / "sample"))
    assert done.returncode == 0, done.stderr
    model = _run("lisa", "init", "--size", "tiny", "--out", str(root / "tiny-lisa"))
    assert model.returncode == 0, model.stderr
    refer = next((root / "sample").rglob("refer_seg"))
    return refer, root / "tiny-lisa"


def _expected_queries(refer: Path, dataset: str, split_by: str, split: str) -> list[tuple[int, int, str]]:
    """(image_id, ann_id, sentence) of every sentence of every ref in the split, read straight from the pickle."""
    refs = pickle.loads((refer / dataset / f"refs({split_by}).p").read_bytes(), encoding="latin1")
    return sorted((r["image_id"], r["ann_id"], s["sent"].strip().lower()) for r in refs
                  if refer_split_matches(split, r["split"]) for s in r["sentences"])


def _coco_mask(instances: dict, ann_id: int) -> np.ndarray:
    """The annotation decoded by pycocotools (polygons merged), clipped to 0/1."""
    ann = next(a for a in instances["annotations"] if a["id"] == ann_id)
    image = next(i for i in instances["images"] if i["id"] == ann["image_id"])
    rles = mask_utils.frPyObjects(ann["segmentation"], image["height"], image["width"])
    return np.clip(mask_utils.decode(rles).sum(axis=2), 0, 1).astype(bool)


@pytest.mark.parametrize("dataset,split_by,split", [("refcoco", "unc", "val"), ("refcoco", "unc", "testA"),
                                                    ("refcoco+", "unc", "testB"), ("refcocog", "umd", "test")])
def test_refer_eval_scores_every_sentence_with_the_papers_row_beside(dataset, split_by, split):
    refer, model = _fixtures()
    out = scratch("refer-out")
    done = _run("lisa", "eval", dataset, "--refer-root", str(refer), "--split", split, "--weights", str(model),
                "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads((out / f"{dataset}_{split}.results.json").read_text())
    expected = _expected_queries(refer, dataset, split_by, split)
    assert expected, "the synthetic source has sentences in this split"
    got = sorted((int(q["image_id"]), q["ann_id"], q["sentence"]) for q in results["queries"])
    assert got == expected  # every sentence is one query, none twice, none from another split

    # cIoU = summed I / summed U over the queries, gIoU = their mean IoU: recomputed here from the same model's
    # masks (predicted through the library's predictor) against pycocotools' decoding of instances.json.
    from reasonseg.lisa.infer import LisaPredictor

    predictor = LisaPredictor.from_pretrained(model)
    instances = json.loads((refer / dataset / "instances.json").read_text())
    files = {i["id"]: i["file_name"] for i in instances["images"]}
    inter = union = 0
    ious = []
    for image_id, ann_id, sentence in expected:
        image = refer / "images" / "mscoco" / "images" / "train2014" / files[image_id]
        pred = predictor.segment([(image, sentence, False)])[0]
        truth = _coco_mask(instances, ann_id)
        i, u = int((pred & truth).sum()), int((pred | truth).sum())
        inter, union = inter + i, union + u
        ious.append(i / (u + 1e-5) + (1.0 if u == 0 else 0.0))
    assert results["ciou"] == pytest.approx(inter / union, abs=1e-9)
    assert results["giou"] == pytest.approx(np.mean(ious), abs=1e-4)
    assert results["n"] == len(expected)

    paper = {row.method: row.ciou[dataset][split] for row in PAPER_TABLE2}
    lines = done.stdout.splitlines()
    paper_line = next(line for line in lines if "LISA-7B (paper)" in line)
    assert f"{paper['LISA-7B']:.1f}" in paper_line
    measured = next(line for line in lines if "measured: tiny-lisa" in line)
    assert f"{100 * results['ciou']:.1f}" in measured and f"{100 * results['giou']:.1f}" in measured


def test_refer_split_filter_is_the_references():
    # REFER.getRefIds: testA/testB/testC by the letter, `test` by substring, others exactly.
    assert refer_split_matches("testA", "testA") and refer_split_matches("testA", "testAB")
    assert not refer_split_matches("testA", "testB")
    assert refer_split_matches("test", "testA") and refer_split_matches("test", "test")
    assert not refer_split_matches("val", "valB") and not refer_split_matches("test", "val")


def test_paper_rows_hold_table_2():
    row = next(r for r in PAPER_TABLE2 if r.method == "LISA-7B")
    assert [row.ciou["refcoco"][s] for s in ("val", "testA", "testB")] == [74.1, 76.5, 71.1]
    assert [row.ciou["refcoco+"][s] for s in ("val", "testA", "testB")] == [62.4, 67.4, 56.5]
    assert [row.ciou["refcocog"][s] for s in ("val", "test")] == [66.4, 68.5]


@pytest.mark.parametrize("args,message", [
    (["refcoco", "--split", "test"], "refcoco has no evaluation split 'test'"),
    (["refcocog", "--split", "testA"], "refcocog has no evaluation split 'testA'"),
    (["refcoco", "--split", "testB"], "no ref of refcoco is in split 'testB'"),
])
def test_refer_eval_bad_split_is_a_one_line_error(args, message):
    refer, model = _fixtures()
    out = scratch("refer-bad") / "out"
    done = _run("lisa", "eval", *args, "--refer-root", str(refer), "--weights", str(model), "--out", str(out))
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_refer_eval_needs_the_refer_root():
    _, model = _fixtures()
    done = _run("lisa", "eval", "refcoco", "--weights", str(model))
    assert done.returncode == 2 and "--refer-root" in done.stderr
    # A refused run deletes nothing, --overwrite or not: the arguments are checked before earlier files go.
    out = scratch("refer-kept")
    (out / "refcoco_val.results.json").write_text("{}")
    for split in ("val", "testB"):      # testB: the refs hold none
        done = _run("lisa", "eval", "refcoco", "--weights", str(model), "--out", str(out), "--overwrite",
                    *(["--refer-root", str(_fixtures()[0]), "--split", split] if split == "testB" else []))
        assert done.returncode == 2 and (out / "refcoco_val.results.json").read_text() == "{}"


def test_refer_eval_hostile_refs_pickle_is_refused(tmp_path):
    refer, model = _fixtures()
    import shutil

    root = tmp_path / "refer_seg"
    shutil.copytree(refer, root)

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Boom()]))
    done = _run("lisa", "eval", "refcoco", "--refer-root", str(root), "--weights", str(model),
                "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "refs pickle" in done.stderr
    assert not (tmp_path / "pwned").exists()


def test_refer_splits_share_one_folder_and_overwrite_replaces_only_its_own():
    # docs/lisa.md's recipe: every split into the default lisa-eval, one after the other, no --overwrite.
    refer, model = _fixtures()
    cwd = scratch("refer-recipe")
    (cwd / "lisa-eval").mkdir()
    (cwd / "lisa-eval" / "val.results.json").write_text("{}")        # a ReasonSeg evaluation made earlier
    for dataset, split in (("refcoco", "val"), ("refcoco", "testA"), ("refcocog", "test")):
        done = subprocess.run([*CLI, "lisa", "eval", dataset, "--refer-root", str(refer), "--split", split,
                               "--weights", str(model)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)
        assert done.returncode == 0, done.stderr
    out = cwd / "lisa-eval"
    kept = {name: (out / name).read_bytes() for name in ("val.results.json", "refcoco_testA.results.json",
                                                         "refcocog_test.results.json")}
    # The same split again is refused (it would replace its results) and leaves every file as it was.
    again = ["lisa", "eval", "refcoco", "--refer-root", str(refer), "--split", "val", "--weights", str(model),
             "--out", str(out)]
    before = (out / "refcoco_val.results.json").read_bytes()
    refused = _run(*again)
    assert refused.returncode == 2 and "refcoco_val.results.json" in refused.stderr and "--overwrite" in refused.stderr
    assert (out / "refcoco_val.results.json").read_bytes() == before
    # --overwrite replaces that split's results only: the other splits' and ReasonSeg's files stay byte for byte.
    (out / "refcoco_val.results.json").write_text("{}")
    done = _run(*again, "--overwrite")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "refcoco_val.results.json").read_text())["split"] == "val"
    assert {name: (out / name).read_bytes() for name in kept} == kept
