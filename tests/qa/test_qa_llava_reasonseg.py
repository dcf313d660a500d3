"""LLaVA-Instruct (VQA, no mask) and ReasonSeg train (same mask for every text, explanatory variants)."""
import json

import numpy as np
import pytest
from qa_testlib import build, gotcha_root, human_turns

from reasonseg.builders.qa import QASourceError
from reasonseg.builders.qa.templates import ANSWERS, EXPLANATORY_QUESTIONS, LONG_QUESTIONS, SHORT_QUESTIONS
from reasonseg.dataset import load_split
from reasonseg.masks import decode_rle, rasterize_shapes
from reasonseg.sample.qa_sources import write_cocostuff, write_llava
from reasonseg.sample.release import write_sample_release


@pytest.fixture()
def llava(tmp_path):
    root = gotcha_root(tmp_path)
    write_cocostuff(root / "cocostuff", root / "coco")
    return write_llava(root / "llava_dataset", root / "coco")


def test_llava_conversations_image_token_in_front(llava, tmp_path):
    _, records = build({"llava_instruct": llava}, tmp_path / "out")
    raw = json.loads((llava / "llava_instruct_150k.json").read_text(encoding="utf-8"))
    assert len(records) == len(raw) and all(isinstance(item["id"], str) for item in raw)
    for rec, item in zip(records, raw, strict=True):
        assert rec["masks"] == [] and rec["ignore"] is None and rec["targets"] == []
        assert rec["image"] == f"train2017/{item['image']}"
        assert [t["from"] for t in rec["conversations"]] == [t["from"] for t in item["conversations"]]
        first = rec["conversations"][0]["value"]
        assert first.startswith("<image>\n") and first.count("<image>") == 1
        assert first[len("<image>\n"):] == item["conversations"][0]["value"].replace("<image>", "").strip()
        assert [t["value"] for t in rec["conversations"][1:]] == [t["value"] for t in item["conversations"][1:]]
    assert records[0]["conversations"][0]["value"] == "<image>\nWhat colour is the largest shape in the image?"
    assert len(records[1]["conversations"]) == 4
    assert "naïve" in records[2]["conversations"][1]["value"]
    assert "naïve" in (tmp_path / "out" / "qa.jsonl").read_text(encoding="utf-8")  # not \u-escaped


def test_llava_item_starting_with_gpt(llava, tmp_path):
    path = llava / "llava_instruct_150k.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    items[1]["conversations"] = items[1]["conversations"][1:]
    path.write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(QASourceError, match=r"llava_instruct/1.*the first turn is from 'gpt', expected 'human'"):
        build({"llava_instruct": llava}, tmp_path / "out")
    summary, records = build({"llava_instruct": llava}, tmp_path / "out", keep_going=True)
    assert [s["item"] for s in summary.skipped] == ["1"] and len(records) == len(items) - 1


@pytest.fixture()
def reason_seg(tmp_path):
    return write_sample_release(gotcha_root(tmp_path) / "reason_seg" / "ReasonSeg", seed=1, counts={"train": 10})


def test_reasonseg_every_text_same_mask(reason_seg, tmp_path):
    _, records = build({"reason_seg": reason_seg}, tmp_path / "out", explanatory=-1)
    samples = {s.id: s for s in load_split(reason_seg, "train")}
    asked = {}
    for rec in records:
        sid = rec["id"].split("/")[1]
        sample = samples[sid]
        assert rec["image"] == f"train/{sid}.jpg"
        gt = rasterize_shapes(sample.shapes, sample.height, sample.width)
        for mask in rec["masks"]:
            assert np.array_equal(decode_rle(mask), (gt == 1).astype(np.uint8))
        if (gt == 255).any():
            assert np.array_equal(decode_rle(rec["ignore"]), (gt == 255).astype(np.uint8))
        else:
            assert rec["ignore"] is None
        for question, text, (q_id, a_id) in zip(human_turns(rec), rec["targets"], rec["templates"], strict=True):
            kind, k = q_id.split(":")
            body = question.removeprefix("<image>\n")
            if sample.is_sentence:
                assert kind == "long" and body == LONG_QUESTIONS[int(k)].format(sent=text)
            else:
                assert kind == "short" and body == SHORT_QUESTIONS[int(k)].format(class_name=text.lower())
            assert a_id.startswith("answer:")
        asked.setdefault(sid, []).extend(rec["targets"])
    for sid, sample in samples.items():
        expected = list(sample.texts) if sample.is_sentence else [t.lower() for t in sample.texts]
        assert asked[sid] == expected


def test_reasonseg_explanatory_variants(reason_seg, tmp_path):
    explained = {e["image"].removesuffix(".jpg"): e["outputs"] for e in
                 json.loads((reason_seg / "explanatory" / "train.json").read_text())}
    assert explained
    _, text_only = build({"reason_seg": reason_seg}, tmp_path / "a", explanatory=1.0)
    for rec in text_only:
        sid = rec["id"].split("/")[1]
        if sid in explained:
            assert rec["masks"] == [] and rec["ignore"] is None
            assert all(t["value"] == explained[sid] for t in rec["conversations"][1::2])
            assert human_turns(rec)[0] == "<image>\n" + rec["targets"][0]
        else:
            assert len(rec["masks"]) == len(rec["targets"])
    _, mixed = build({"reason_seg": reason_seg}, tmp_path / "b", explanatory=0.0)
    kinds = set()
    for rec in (r for r in mixed if r["id"].split("/")[1] in explained):
        sid = rec["id"].split("/")[1]
        assert len(rec["masks"]) == len(rec["targets"])
        pairs = zip(human_turns(rec), rec["conversations"][1::2], strict=True)
        for (q, a), text, (q_id, a_id) in zip(pairs, rec["targets"], rec["templates"], strict=True):
            if q_id.startswith("explanatory:"):
                extra = EXPLANATORY_QUESTIONS[int(q_id.split(":")[1])]
                assert q.removeprefix("<image>\n") == f"{text} {extra}"
                answer = ANSWERS[int(a_id.split(":")[1].removesuffix("+outputs"))]
                assert a["value"] == f"{answer} {explained[sid]}"
                kinds.add("explained")
            else:
                assert a["value"] in ANSWERS
                kinds.add("plain")
    assert kinds == {"explained", "plain"}
