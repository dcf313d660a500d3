"""Exports the original can load: the same config keys, weight keys and slow-tokenizer files as the original's own
export (the golden fixture's `ckpt/`, written by the original's code), and files its loaders read: transformers'
LLaMA tokenizer (`tokenizer.model` + `added_tokens.json`), `CLIPImageProcessor` / `CLIPVisionModel` from the
config's `vision_tower`, and our strict loader giving the original's logits back."""
import json
from pathlib import Path

import numpy as np
import pytest

from reasonseg.lisa.checkpoint import load_lisa, save_lisa
from reasonseg.lisa.infer import LisaPredictor
from reasonseg.lisa.preprocess import ClipPreprocessor

FIXTURE = Path(__file__).parent / "fixtures" / "lisa-reference-tiny"
ORIGINAL = FIXTURE / "ckpt"
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    loaded = load_lisa(ORIGINAL)
    return save_lisa(loaded.model, loaded.tokenizer, tmp_path_factory.mktemp("export") / "lisa",
                     image_processor=ClipPreprocessor.from_pretrained(ORIGINAL / "clip-vision"),
                     max_shard_size="1MB")


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_export_has_the_originals_config_weight_keys_and_tokenizer_files(exported):
    ours, original = read(exported / "config.json"), read(ORIGINAL / "config.json")
    assert set(original) - set(ours) == {"transformers_version"}
    assert {k: ours[k] for k in original if k in ours} == {k: v for k, v in original.items()
                                                          if k != "transformers_version"}
    assert ours["vision_tower"] == ours["mm_vision_tower"] == "clip-vision" and ours["train_mask_decoder"] is True
    ours_keys = set(read(exported / "pytorch_model.bin.index.json")["weight_map"])
    assert ours_keys == set(read(ORIGINAL / "pytorch_model.bin.index.json")["weight_map"])
    assert (exported / "tokenizer.model").read_bytes() == (ORIGINAL / "tokenizer.model").read_bytes()
    for name in TOKENIZER_FILES:
        assert read(exported / name) == read(ORIGINAL / name), name


def test_transformers_reads_the_exported_tokenizer_and_vision_tower(exported):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionModel

    from reasonseg.lisa.tokenizer import LisaTokenizer

    ours = LisaTokenizer.from_pretrained(exported)
    theirs = AutoTokenizer.from_pretrained(str(exported))    # sentencepiece + protobuf
    assert len(theirs) == len(ours) == 603
    assert theirs.convert_tokens_to_ids(["[SEG]", "<im_start>", "<im_end>"]) == [600, 601, 602]
    for text in ("A chat between a curious human and an artificial intelligence assistant.", "Où est le café?"):
        assert theirs(text).input_ids == ours.encode(text)
    tower = exported / read(exported / "config.json")["vision_tower"]
    assert CLIPImageProcessor.from_pretrained(str(tower)).crop_size["height"] == 224
    assert CLIPVisionModel.from_pretrained(str(tower)).config.image_size == 224


def test_the_export_reloads_to_the_originals_logits(exported):
    case = read(FIXTURE / "reference" / "inputs.json")["inputs"][0]
    predictor = LisaPredictor.from_pretrained(exported, device="cpu", precision="fp32")
    logits = predictor.segment([(FIXTURE / case["image"], case["query"], case["is_sentence"])], return_logits=True)
    original = np.load(FIXTURE / case["teacher_forced"]["logits"])[0]
    assert np.abs(logits[0] - original).max() <= 1e-4


def test_lisa_init_writes_the_same_layout_with_a_sentencepiece_tokenizer():
    import sys

    from transformers import AutoTokenizer

    from reasonseg.lisa.tokenizer import LisaTokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from lisa_helpers import tiny_model

    folder = tiny_model("v1")
    assert read(folder / "tokenizer_config.json")["tokenizer_class"] == "LlamaTokenizer"
    assert read(folder / "config.json")["vision_tower"] == "clip-vision"
    ours = LisaTokenizer.from_pretrained(folder)
    theirs = AutoTokenizer.from_pretrained(str(folder))
    assert theirs.convert_tokens_to_ids("[SEG]") == ours.added["[SEG]"] == len(ours) - 3
    text = "Please segment the red circle in this image."
    assert theirs(text).input_ids == ours.encode(text)
