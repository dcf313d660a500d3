"""LISA's training data comes from the QA builder's own reader, and `reasonseg lisa train` runs on its real output."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import TINY, overfit_qa, release, scratch, seg_qa, tiny_336_model, tiny_model, train_config  # noqa: E402

from reasonseg.builders.qa import QADataset  # noqa: E402
from reasonseg.errors import DatasetError  # noqa: E402
from reasonseg.lisa.data import QARecipes, make_example, qa_recipe  # noqa: E402


def _demo_qa(samples: int = 40) -> Path:
    from reasonseg.builders.qa.demo import demo_step

    return demo_step(scratch("qa-demo"), samples=samples)


def test_qa_records_become_the_references_per_question_examples():
    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.preprocess import ClipPreprocessor

    qa = _demo_qa()
    recipes = QARecipes(qa)
    records = list(QADataset(qa))
    assert len(recipes) == len(records) > 0
    templated = next(k for k, r in enumerate(records) if len(r.turns) == 3 and r.ignore is not None)
    vqa = next(k for k, r in enumerate(records) if not r.templates and len(r.turns) == 2)
    # Three targets -> three one-turn conversations, each opening with the image (the reference's layout).
    recipe = recipes[templated]
    assert len(recipe.conversations) == 3 and all(len(c) == 1 for c in recipe.conversations)
    assert all(c[0][0].startswith("<image>\n") and c[0][0].count("<image>") == 1 for c in recipe.conversations)
    assert [c[0] for c in recipe.conversations][1][0].endswith(records[templated].turns[1][0])
    # A VQA conversation stays one multi-turn conversation with a single image and no mask.
    free = recipes[vqa]
    assert len(free.conversations) == 1 and len(free.conversations[0]) == 2 and free.masks is None
    assert sum(q.count("<image>") for q, _ in free.conversations[0]) == 1

    loaded = load_lisa(tiny_model("v1"))
    processor = ClipPreprocessor.from_pretrained(loaded.vision_tower_path)
    model = loaded.model
    example = make_example(recipe, loaded.tokenizer, processor, model.seg_token_id,
                           sam_size=model.config.sam.image_size)
    assert len(example.sequences) == 3 and example.masks.shape[0] == 3
    assert all(s.input_ids.count(model.seg_token_id) == 1 for s in example.sequences)
    vqa_example = make_example(free, loaded.tokenizer, processor, model.seg_token_id,
                               sam_size=model.config.sam.image_size)
    assert len(vqa_example.sequences) == 1 and vqa_example.masks.shape[0] == 0


def _train_one_step(name: str, model: Path, qa: Path) -> tuple[dict, float]:
    """One optimizer step of batch 2 on `qa`: its metrics line, and how text_hidden_fcs' first weight moved."""
    import torch

    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.train import train

    out = scratch(name) / "run"
    train(train_config(out, model=str(model), data={"qa": str(qa), "reasonseg": None}, epochs=1,
                       steps_per_epoch=1, batch_size=2, warmup_steps=0))
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    start = load_lisa(model).model.state_dict()["text_hidden_fcs.0.weight"]
    trained = torch.load(out / "checkpoints" / "step_000001" / "trainable.pt")["text_hidden_fcs.0.weight"]
    return metrics, float((trained - start).abs().max())


def test_llava15_336_keeps_every_id_and_mask_of_a_short_sample_and_trains_its_mask_head():
    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.conversation import render, tokenize
    from reasonseg.lisa.preprocess import ClipPreprocessor

    loaded = load_lisa(tiny_336_model())
    model = loaded.model
    assert model.n_image_tokens == 576      # LLaVA-1.5's CLIP-336: the expanded sequence outgrows 512
    processor = ClipPreprocessor.from_pretrained(loaded.vision_tower_path)
    recipe = QARecipes(overfit_qa())[0]
    whole = tokenize(loaded.tokenizer, render(list(recipe.conversations[0]), True)[0], with_labels=True)
    assert whole.input_ids.count(model.seg_token_id) == 1 and len(whole.input_ids) < 257
    example = make_example(recipe, loaded.tokenizer, processor, model.seg_token_id, 512,
                           sam_size=model.config.sam.image_size)
    assert example.sequences[0] == whole and example.dropped_masks == 0
    assert example.masks.shape[0] == 1 and np.array_equal(example.masks[0], recipe.masks[0])
    # Trained, the [SEG] state reaches the mask head: text_hidden_fcs moves and the log drops nothing.
    metrics, moved = _train_one_step("v15-short", tiny_336_model(), overfit_qa())
    assert metrics["dropped_masks"] == 0 and moved > 0


def test_a_too_long_sample_keeps_model_max_length_minus_255_ids_and_its_dropped_mask_is_counted():
    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.preprocess import ClipPreprocessor

    long_qa = seg_qa("qa-long", padding=300)
    loaded = load_lisa(tiny_336_model())
    model = loaded.model
    processor = ClipPreprocessor.from_pretrained(loaded.vision_tower_path)
    example = make_example(QARecipes(long_qa)[0], loaded.tokenizer, processor, model.seg_token_id, 400,
                           sam_size=model.config.sam.image_size)
    assert len(example.sequences[0].input_ids) == len(example.sequences[0].labels) == 400 - 255
    assert model.seg_token_id not in example.sequences[0].input_ids
    assert example.masks.shape[0] == 0 and example.dropped_masks == 1
    # In training the two cut masks of the step are counted, and no mask gradient reaches text_hidden_fcs.
    metrics, moved = _train_one_step("v15-long", tiny_336_model(), long_qa)
    assert metrics["dropped_masks"] == 2 and moved == 0


def test_ignore_pixels_are_background_and_bad_records_are_named():
    qa = _demo_qa()
    dataset = QADataset(qa)
    record = next(r for r in dataset if r.ignore is not None and r.masks)
    # Mark some target pixels as ignored: they must come out as background, the rest unchanged.
    target = record.masks[0].astype(bool)
    assert target.any()
    ignore = np.zeros_like(record.masks[0])
    ys, xs = np.nonzero(target)
    ignore[ys[: len(ys) // 2], xs[: len(xs) // 2]] = 1
    record.ignore = ignore
    masks = qa_recipe(record).masks
    assert masks.dtype == np.uint8 and not masks[0][ignore == 1].any()
    assert np.array_equal(masks[0][ignore == 0], record.masks[0][ignore == 0])

    record.conversations = [record.conversations[1], record.conversations[0]]
    with pytest.raises(DatasetError, match="alternate") as info:
        qa_recipe(record, "somewhere.jsonl")
    assert info.value.sample_id == record.id
    moved = QADataset(qa)
    moved.image_roots = {}
    with pytest.raises(DatasetError, match="no image root"):
        qa_recipe(moved[0])
    # image_roots passed through the training config reach the shared reader.
    first = moved.record(next(moved.raw_records()))
    roots = QARecipes(qa, {first.source: "/elsewhere"})
    assert str(roots[0].image_path).startswith("/elsewhere")


def test_lisa_train_cli_on_the_built_qa_set_and_reasonseg_train():
    import yaml

    folder = scratch("cli-train")
    config = yaml.safe_load(TINY.read_text())
    config.update({"model": str(tiny_model("v1")), "out": str(folder / "run"), "epochs": 1, "steps_per_epoch": 2,
                   "warmup_steps": 1, "batch_size": 3})
    config["data"].update({"qa": str(_demo_qa()), "reasonseg": str(release()), "reasonseg_rate": 0.5,
                           "val": str(release())})
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    exe = str(Path(sys.executable).with_name("reasonseg"))
    proc = subprocess.run([exe, "lisa", "train", "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 2 loss" in proc.stdout and "val at step 2: gIoU" in proc.stdout, proc.stdout
    metrics = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in metrics if m.get("split") != "val"]   # training steps (val records sit beside them)
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    tag = folder / "run" / "checkpoints" / "step_000002"
    assert (tag / "trainable.pt").exists() and json.loads((tag / "val.json").read_text())["n"] == 4
    # A broken QA folder is a one-line user error, not a traceback.
    config["data"]["qa"] = str(folder / "missing")
    config["out"] = str(folder / "run2")
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([exe, "lisa", "train", "--config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "QA file not found" in proc.stderr
