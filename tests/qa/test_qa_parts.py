"""PACO-LVIS and PASCAL-Part readers: names, part phrasing, LVIS-style images without file_name, empty segms."""
import json

import numpy as np
import pytest
from pycocotools import mask as cocomask
from qa_testlib import build, gotcha_root

from reasonseg.builders.qa import QASourceError
from reasonseg.builders.qa.parts import paco_target_name
from reasonseg.masks import decode_rle
from reasonseg.sample.qa_sources import write_cocostuff, write_paco, write_pascal_part


def test_paco_names_cut_at_parenthesis_keep_underscores():
    assert paco_target_name("car_(automobile):antenna") == ("car:antenna", ("car", "antenna"))
    assert paco_target_name("trash_can:lid") == ("trash_can:lid", ("trash_can", "lid"))
    assert paco_target_name("car_(automobile)") == ("car", None)


def _check_masks(records, data):
    anns = data["annotations"]
    for rec in records:
        image_id = int(rec["id"].split("/")[1])
        expected = [a for a in sorted(anns, key=lambda a: a["id"]) if a["image_id"] == image_id and a["segmentation"]]
        assert len(rec["masks"]) == len(rec["targets"])
        for rle, ann in zip(rec["masks"], expected, strict=True):
            truth = cocomask.decode({"size": ann["segmentation"]["size"],
                                     "counts": ann["segmentation"]["counts"].encode()})
            assert np.array_equal(decode_rle(rle), truth)


def test_paco(tmp_path):
    root = gotcha_root(tmp_path)
    write_cocostuff(root / "cocostuff", root / "coco")
    paco = write_paco(root / "vlpart" / "paco", root / "coco")
    data = json.loads((paco / "annotations" / "paco_lvis_v1_train.json").read_text())
    assert any("file_name" not in image for image in data["images"])
    assert any(a["segmentation"] == [] for a in data["annotations"])
    _, records = build({"paco_lvis": paco}, tmp_path / "out", per_sample=10)
    assert len(records) == 3
    for rec, image in zip(records, sorted(data["images"], key=lambda i: i["id"]), strict=True):
        assert rec["image"] == f"train2017/{image['id']:012d}.jpg" and (root / "coco" / rec["image"]).is_file()
    _check_masks(records, data)
    asked = [t for r in records for t in r["targets"]]
    assert len(asked) == sum(bool(a["segmentation"]) for a in data["annotations"])
    allowed = {"bicycle", "car", "car antenna", "the antenna of the car", "bicycle wheel", "the wheel of the bicycle",
               "trash_can lid", "the lid of the trash_can"}
    assert set(asked) <= allowed and "(" not in " ".join(asked)


def test_pascal_part(tmp_path):
    root = write_pascal_part(gotcha_root(tmp_path) / "vlpart" / "pascal_part")
    data = json.loads((root / "train.json").read_text())
    assert min(a["id"] for a in data["annotations"]) == 0
    _, records = build({"pascal_part": root}, tmp_path / "out", per_sample=10)
    assert [r["image"] for r in records] == [f"VOCdevkit/VOC2010/JPEGImages/2008_00000{k}.jpg" for k in (2, 3, 7)]
    _check_masks(records, data)
    names = {c["name"] for c in data["categories"]}
    for rec in records:
        for text in rec["targets"]:
            assert any(text in (f"{o} {p}", f"the {p} of the {o}") for o, p in (n.split(":") for n in names))
    data["categories"][0]["name"] = "aeroplane:body:front"
    (root / "train.json").write_text(json.dumps(data))
    with pytest.raises(QASourceError, match="exactly one colon"):
        build({"pascal_part": root}, tmp_path / "out")
