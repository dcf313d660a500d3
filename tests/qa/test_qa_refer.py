"""refCOCO family reader: pickled refs + instances.json, overlaps clipped, refclef RLE lists, splits, bad inputs."""
import json
import pickle

import numpy as np
import pytest
from pycocotools import mask as cocomask
from qa_testlib import build, gotcha_root, human_turns, read_records

from reasonseg.builders.qa import BuildOptions, QASourceError, build_qa, open_sources
from reasonseg.masks import decode_rle
from reasonseg.sample.qa_sources import write_refer


@pytest.fixture()
def refer(tmp_path):
    return write_refer(gotcha_root(tmp_path) / "refer_seg", seed=2)


def _refs(refer, name):
    split_by = "umd" if name == "refcocog" else "unc"
    return pickle.loads((refer / name / f"refs({split_by}).p").read_bytes())


def _reference_mask(segmentation, h, w):
    """What the reference computes (decode every part, sum), clipped to 1."""
    if isinstance(segmentation[0], dict):
        rles = [{"size": r["size"], "counts": r["counts"].encode()} for r in segmentation]
    else:
        rles = cocomask.frPyObjects(segmentation, h, w)
    summed = np.sum(cocomask.decode(rles), axis=2)
    return summed, np.minimum(summed, 1).astype(np.uint8)


@pytest.mark.parametrize("name", ["refcoco", "refcoco+", "refcocog", "refclef"])
def test_every_train_sentence_with_its_annotation_mask(refer, tmp_path, name):
    _, records = build({name: refer}, tmp_path / "out", per_sample=3)
    instances = json.loads((refer / name / "instances.json").read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    sizes = {i["id"]: (i["height"], i["width"]) for i in instances["images"]}
    expected = sorted((r["image_id"], s["sent"].strip().lower(), r["ann_id"]) for r in _refs(refer, name)
                      if r["split"] == "train" for s in r["sentences"])
    got = []
    overlap_seen = False
    for rec in records:
        image_id = int(rec["id"].split("/")[1])
        assert (refer / rec["image"]).is_file()
        if name == "refclef":
            assert rec["image"] == f"images/saiapr_tc-12/00/images/{image_id}.jpg"
        else:
            assert rec["image"] == f"images/mscoco/images/train2014/COCO_train2014_{image_id:012d}.jpg"
        for text, rle, question in zip(rec["targets"], rec["masks"], human_turns(rec), strict=True):
            assert text == text.strip().lower() and text in question
            matches = [a for (i, s, a) in expected if i == image_id and s == text]
            summed, clipped = _reference_mask(anns[matches[0]]["segmentation"], *sizes[image_id])
            assert np.array_equal(decode_rle(rle), clipped)
            overlap_seen |= bool((summed == 2).any())
            got.append((image_id, text, matches[0]))
    assert sorted(got) == expected
    assert overlap_seen  # the two-polygon annotation is among the train refs and was clipped


def test_split_selection(refer, tmp_path):
    refs = _refs(refer, "refcoco")
    for splits, keep in ((("train",), {"train"}), (("all",), {"train", "testA", "val"}), (("testA",), {"testA"})):
        out = tmp_path / "-".join(splits)
        build_qa(open_sources({"refcoco": refer}, refer_splits=splits), out, BuildOptions())
        turns = sum(len(r["targets"]) for r in read_records(out))
        assert turns == sum(len(r["sentences"]) for r in refs if r["split"] in keep)


def test_refer_seg_alias_opens_all_four(refer, tmp_path):
    summary, _ = build({"refer_seg": refer}, tmp_path / "out")
    assert set(summary.per_source) == {"refcoco", "refcoco+", "refcocog", "refclef"}


def test_refs_pickle_of_the_wrong_shape(refer, tmp_path):
    path = refer / "refcoco" / "refs(unc).p"
    path.write_bytes(pickle.dumps({"refs": _refs(refer, "refcoco")}, protocol=2))
    with pytest.raises(QASourceError, match=r"refs\(unc\)\.p.*holds a dict, expected a list of ref dicts"):
        build({"refcoco": refer}, tmp_path / "out")
    refs = _refs(refer, "refcoco+")
    del refs[1]["ann_id"]
    (refer / "refcoco+" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(QASourceError, match="ref 1 lacks ann_id"):
        build({"refcoco+": refer}, tmp_path / "out")


def test_pickle_with_a_class_is_refused(refer, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (refer / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(QASourceError, match="only plain lists and dicts"):
        build({"refcoco": refer}, tmp_path / "out")


def test_ref_whose_annotation_is_absent(refer, tmp_path):
    refs = _refs(refer, "refcoco")
    refs[0]["ann_id"] = 987654
    (refer / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    with pytest.raises(QASourceError, match=r"refcoco/9.*field 'ann_id'.*annotation 987654"):
        build({"refcoco": refer}, tmp_path / "out")
    summary, records = build({"refcoco": refer}, tmp_path / "out", keep_going=True)
    assert [s["item"] for s in summary.skipped] == [str(refs[0]["image_id"])]
    assert records and not any(r["id"].startswith(f"refcoco/{refs[0]['image_id']}/") for r in records)
