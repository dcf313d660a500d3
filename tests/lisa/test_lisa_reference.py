"""The golden fixture: a tiny LISA built, saved and run by the ORIGINAL implementation (transformers 4.31, slow
LlamaTokenizer, fp32, CPU; see fixtures/lisa-reference-tiny/README.md). Loaded through the public predictor, our
code must give the original's token ids, input tensors, [SEG] states and mask logits, for all three images and both
of the original's paths: validation (teacher-forced `[SEG].`) and chat (greedy generation).

Tolerances (the fixture's README): ids and positions equal, input tensors equal (sha256 of the float32 C-order
array), logits within 1e-4, masks equal wherever the original's |logit| > 1e-4.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reasonseg.lisa.infer import LisaPredictor

FIXTURE = Path(__file__).parent / "fixtures" / "lisa-reference-tiny"
REFERENCE = json.loads((FIXTURE / "reference" / "inputs.json").read_text(encoding="utf-8"))
CASES = {case["name"]: case for case in REFERENCE["inputs"]}
STAGES = np.load(FIXTURE / "reference" / "stages.npz")
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def predictor():
    return LisaPredictor.from_pretrained(FIXTURE / "ckpt", device="cpu", precision="fp32")


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor.numpy(), dtype=np.float32).tobytes()).hexdigest()


def assert_logits_match(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    assert float(np.abs(ours - reference).max()) <= LOGIT_TOLERANCE
    decided = np.abs(reference) > LOGIT_TOLERANCE
    assert decided.mean() > 0.99  # the comparison below covers nearly every pixel
    assert np.array_equal((ours > 0)[decided], (reference > 0)[decided])


def test_the_fixture_is_the_original_tokenizers_and_holds_every_case():
    assert REFERENCE["versions"]["transformers"] == "4.31.0"
    assert sorted(CASES) == ["camera_lens", "car_speed", "dog_with_horn"]
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 5 * 2**20


@pytest.mark.parametrize("name", sorted(CASES))
def test_sam_and_clip_inputs_are_the_originals_tensors(predictor, name):
    case = CASES[name]
    prepared = predictor.prepare(FIXTURE / case["image"])
    assert prepared.original_size == (case["height"], case["width"])
    assert list(prepared.resize_size) == case["teacher_forced"]["resize"]
    for path in ("teacher_forced", "generate"):
        stages = case[path]["stages"]
        assert sha256(prepared.sam) == stages["sam_input_sha256"]
        assert sha256(prepared.clip) == stages["clip_input_sha256"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_teacher_forced_path_gives_the_originals_ids_seg_state_and_logits(predictor, name):
    case, forced = CASES[name], CASES[name]["teacher_forced"]
    ids = predictor.prompt_ids(case["query"], case["is_sentence"])
    assert ids == forced["input_ids"]

    model = predictor.model
    prepared = predictor.prepare(FIXTURE / case["image"])
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        features = model.encode_clip(prepared.clip[None])
        expanded = model.expand(input_ids, torch.ones_like(input_ids), features, torch.zeros(1, dtype=torch.long))
        positions = model.seg_positions(input_ids, torch.ones_like(input_ids), expanded.positions)[0]
        assert positions.tolist() == forced["seg_hidden_positions"]
        hidden = model.llm.model(inputs_embeds=expanded.embeds).last_hidden_state[0, positions]
        prompt = model.text_hidden_fcs(hidden)
    np.testing.assert_allclose(hidden.numpy(), STAGES[f"{name}.teacher_forced.seg_hidden"], atol=LOGIT_TOLERANCE)
    np.testing.assert_allclose(prompt.numpy(), STAGES[f"{name}.teacher_forced.seg_prompt"], atol=LOGIT_TOLERANCE)

    logits = predictor.segment([(FIXTURE / case["image"], case["query"], case["is_sentence"])], return_logits=True)
    assert_logits_match(logits[0], np.load(FIXTURE / forced["logits"])[0])
    masks = predictor.segment([(FIXTURE / case["image"], case["query"], case["is_sentence"])])
    assert masks[0].dtype == bool and np.array_equal(masks[0], logits[0] > 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chat_path_gives_the_originals_prompt_generated_ids_and_logits(predictor, name):
    case, generated = CASES[name], CASES[name]["generate"]
    reply = predictor.chat(FIXTURE / case["image"], case["chat_question"],
                           max_new_tokens=generated["max_new_tokens"])
    assert reply.prompt == generated["prompt"]
    assert reply.prompt_ids == generated["input_ids"]
    assert reply.token_ids == generated["new_ids"]          # [SEG] then </s>
    assert reply.text == "[SEG]"
    # The original's chat.py decodes prompt + generated ids (image placeholder dropped) into this text.
    shown = [i for i in reply.prompt_ids if i >= 0] + reply.token_ids
    assert predictor.tokenizer.decode(shown) == generated["text_output"]
    assert reply.logits.shape[0] == generated["n_masks"] == len(reply.masks)
    assert_logits_match(reply.logits, np.load(FIXTURE / generated["logits"]))
    assert np.array_equal(reply.masks, reply.logits > 0)

    model = predictor.model
    prepared = predictor.prepare(FIXTURE / case["image"])
    _, seg_hidden = model.generate(prepared.clip[None], torch.tensor([reply.prompt_ids]),
                                   predictor.tokenizer.eos_token_id, generated["max_new_tokens"])
    with torch.no_grad():
        prompt = model.text_hidden_fcs(seg_hidden)
    np.testing.assert_allclose(seg_hidden.numpy(), STAGES[f"{name}.generate.seg_hidden"], atol=LOGIT_TOLERANCE)
    np.testing.assert_allclose(prompt.numpy(), STAGES[f"{name}.generate.seg_prompt"], atol=LOGIT_TOLERANCE)


def test_a_batch_of_all_three_gives_each_ones_logits(predictor):
    items = [(FIXTURE / c["image"], c["query"], c["is_sentence"]) for c in CASES.values()]
    for logits, case in zip(predictor.segment(items, return_logits=True), CASES.values(), strict=True):
        assert_logits_match(logits, np.load(FIXTURE / case["teacher_forced"]["logits"])[0])
