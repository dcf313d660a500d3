"""Shared, session-cached fixtures of the LISA tests: tiny models written by the real writers, a small release."""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="lisa-tests-"))
TINY = Path(__file__).parents[2] / "reasonseg" / "lisa" / "configs" / "tiny.yaml"   # the shipped tiny recipe


@functools.cache
def tiny_model(llava: str = "v1") -> Path:
    from reasonseg.lisa.checkpoint import init_release

    return init_release(_ROOT / f"tiny-{llava}", "tiny", llava, max_shard_size="300KB")


@functools.cache
def tiny_336_model() -> Path:
    """A tiny LLaVA-1.5 LISA whose CLIP tower reads 336 px in 14 px patches: 576 image tokens, as the real v1.5."""
    from reasonseg.lisa.checkpoint import new_model, save_lisa
    from reasonseg.lisa.config import VisionConfig

    vision = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=336, patch_size=14, projection_dim=32)
    model, tokenizer, processor = new_model("tiny", "v1.5", vision=vision)
    return save_lisa(model, tokenizer, _ROOT / "tiny-v1.5-336", image_processor=processor)


@functools.cache
def release() -> Path:
    from reasonseg.sample import write_sample_release

    return write_sample_release(_ROOT / "release", counts={"train": 4, "val": 4, "test": 3})


@functools.cache
def overfit_qa() -> Path:
    """4 val samples as QA records with the validation prompt and `[SEG].`, so predict sees what training saw."""
    return seg_qa("qa")


@functools.cache
def seg_qa(name: str, padding: int = 0) -> Path:
    """The 4 val samples as QA records (validation prompt, answer `[SEG].`, the target mask); `padding` words put in
    front of each query make the sequences that much longer."""
    from reasonseg.dataset import load_split
    from reasonseg.lisa.conversation import validation_question
    from reasonseg.masks import encode_rle, rasterize_shapes

    folder = _ROOT / name
    folder.mkdir()
    with open(folder / "qa.jsonl", "w", encoding="utf-8") as fh:
        for s in load_split(release(), "val"):
            mask = (rasterize_shapes(s.shapes, s.height, s.width) == 1).astype("uint8")
            text = "very " * padding + s.texts[0]
            record = {"id": s.id, "source": "reason_seg", "image": f"val/{s.id}.jpg",
                      "conversations": [{"from": "human", "value": validation_question(text, s.is_sentence)},
                                        {"from": "gpt", "value": "[SEG]."}],
                      "masks": [encode_rle(mask)], "ignore": None, "targets": [s.texts[0]], "templates": []}
            fh.write(json.dumps(record) + "\n")
    (folder / "build.json").write_text(json.dumps({"sources": {"reason_seg": {"image_root": str(release())}}}))
    return folder


def scratch(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_ROOT))
    return path


@functools.cache
def seg_answering_model() -> Path:
    """The tiny v1 model rewired so greedy decoding answers every question with exactly `[SEG]` (then EOS), saved
    with the real writer: decoder blocks write nothing to the residual stream, so the last hidden state is the
    normalised embedding of the current token (a bigram model), and the embeddings/lm_head map any token to [SEG]
    and [SEG] to EOS."""
    import torch

    from reasonseg.lisa.checkpoint import load_lisa, save_lisa

    loaded = load_lisa(tiny_model("v1"))
    llm, seg, eos = loaded.model.llm, loaded.model.seg_token_id, loaded.tokenizer.eos_token_id
    with torch.no_grad():
        for layer in llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = llm.get_input_embeddings().weight
        embed[:, :2] = 0
        embed[:, 1] = 1.0            # every token points along axis 1 ...
        embed[seg] = 0
        embed[seg, 0] = 1.0          # ... but [SEG] along axis 0
        head = llm.lm_head.weight
        head.zero_()
        head[seg, 1] = 10.0          # axis 1 -> [SEG]
        head[eos, 0] = 10.0          # axis 0 -> EOS
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(loaded.vision_tower_path)
    return save_lisa(loaded.model, loaded.tokenizer, _ROOT / "seg-answering", image_processor=processor)


def train_config(out: Path, **overrides):
    """The tiny recipe on the tiny v1 model and the test release (no val unless `data` names one)."""
    from reasonseg.lisa.train import load_config

    data = {"reasonseg": str(release()), "val": None, **overrides.pop("data", {})}
    return load_config(TINY, {"model": str(tiny_model("v1")), "out": str(out), "data": data, **overrides})
