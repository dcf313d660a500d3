"""The task functions lmms-eval calls, in process: the prompts, and scoring a part of a split (lmms-eval --limit)
as `reasonseg score` scores a release holding only those images."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datasets")

from reasonseg.dataset import load_split  # noqa: E402
from reasonseg.errors import DatasetError  # noqa: E402
from reasonseg.integrations.lmms_eval import task  # noqa: E402
from reasonseg.integrations.lmms_eval.answers import write_answer  # noqa: E402
from reasonseg.masks import encode_rle, rasterize_shapes  # noqa: E402
from reasonseg.sample import write_sample_release  # noqa: E402
from reasonseg.schema import Prediction  # noqa: E402
from reasonseg.submission import write_predictions  # noqa: E402

EXE = str(Path(sys.executable).with_name("reasonseg"))


@pytest.fixture
def release(tmp_path, monkeypatch):
    root = write_sample_release(tmp_path / "release", counts={"train": 2, "val": 6, "test": 2})
    monkeypatch.setenv("REASONSEG_DATA", str(root))
    monkeypatch.setenv("REASONSEG_CACHE", str(tmp_path / "cache"))
    task.ground_truth.cache_clear()
    return root


def test_prompts_are_lisas_validation_questions_without_the_image_placeholder():
    short = {"text": " the red cup ", "is_sentence": False}
    sentence = {"text": "What holds the coffee?", "is_sentence": True}
    assert task.doc_to_text(short) == "What is the red cup in this image? Please output segmentation mask."
    assert task.doc_to_text(sentence) == "What holds the coffee? Please output segmentation mask."
    assert task.doc_to_text(short, {"prompt": "plain"}) == "the red cup"
    with pytest.raises(DatasetError, match="unknown prompt"):
        task.doc_to_text(short, {"prompt": "chat"})


def test_the_documents_need_reasonseg_data(monkeypatch):
    monkeypatch.delenv("REASONSEG_DATA", raising=False)
    with pytest.raises(DatasetError, match="REASONSEG_DATA"):
        task.val_docs(None)


def test_a_part_of_the_split_scores_as_a_release_of_those_images(release, tmp_path):
    docs = list(task.val_docs(None))
    assert [(d["id"], d["text_index"]) for d in docs] == [(s.id, 0) for s in load_split(release, "val")]
    part, rng = docs[:3], np.random.default_rng(1)
    samples = {s.id: s for s in load_split(release, "val")}
    masks = {}
    for doc in part:
        s = samples[doc["id"]]
        masks[s.id] = (rasterize_shapes(s.shapes, s.height, s.width) == 1) ^ (rng.random((s.height, s.width)) < 0.1)
    items = [task.process_results(doc, [write_answer([encode_rle(masks[doc["id"]])])])["giou"] for doc in part]
    harness = {name: getattr(task, name)(items) for name in ("giou", "ciou", "giou_short", "ciou_long")}

    smaller = tmp_path / "part"
    (smaller / "val").mkdir(parents=True)
    for doc in part:
        for suffix in (".jpg", ".json"):
            shutil.copy(samples[doc["id"]].image_path.with_suffix(suffix), smaller / "val")
    preds = write_predictions(tmp_path / "part.json", [Prediction(sid, 0, encode_rle(m)) for sid, m in masks.items()],
                              "val", "part")
    proc = subprocess.run([EXE, "score", str(smaller), str(preds), "--split", "val", "--json"], capture_output=True,
                          text=True, env={**os.environ, "REASONSEG_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    groups = json.loads(proc.stdout)["groups"]
    assert harness == {"giou": groups["overall"]["giou"], "ciou": groups["overall"]["ciou"],
                       "giou_short": groups["short"]["giou"], "ciou_long": groups["long"]["ciou"]}
