"""bf16 / fp16: the numbers the original computed in each dtype (docs/lisa.md, "Precision").

- LLaMA's rotary tables: transformers 4.31 computed cos/sin once in float32 and rounded them to bf16; current
  transformers recompute them from `inv_freq` on every forward, so `inv_freq` must stay float32 under a bf16 model.
- SAM's dense positional encoding: the original's SAM fork computes it in the model dtype (bf16), which its mask
  decoder was trained with.
- Mask upsampling: the fork upsamples the low-resolution logits in float32 and returns float32.
- fp16: the fork runs SAM's neck in float32 (its LayerNorm overflows in float16).
Tolerances are calibrated by the measurements written next to them.
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reasonseg.lisa.config import preset, with_vocab
from reasonseg.lisa.infer import LisaPredictor, default_precision, quantizable_linears
from reasonseg.lisa.model import build_lisa, dense_positional_encoding

FIXTURE = Path(__file__).parent / "fixtures" / "lisa-reference-tiny"
POSITIONS = 400  # v1's [SEG] state sits near position 330 of the expanded sequence


@pytest.fixture(scope="module")
def head_dim_128_model():
    """A tiny LISA whose attention heads are 128 wide, as LLaMA-7B/13B's (the rotary frequencies depend on it)."""
    config = preset("tiny", "v1")
    config = with_vocab(replace(config, llm={**config.llm, "hidden_size": 256, "num_attention_heads": 2,
                                              "num_key_value_heads": 2}), 100)
    torch.manual_seed(0)
    return build_lisa(config, seg_token_id=99)


def test_rotary_tables_under_bf16_are_the_float32_computed_ones(head_dim_128_model):
    model = head_dim_128_model.to(torch.bfloat16)
    rotary = model.llm.model.rotary_emb
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 128, 2, dtype=torch.float32) / 128))
    assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, inv_freq)
    positions = torch.arange(POSITIONS)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.bfloat16), positions)
    angles = positions[0, :, None].float() * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    assert cos.dtype == torch.bfloat16
    assert torch.equal(cos[0], angles.cos().to(torch.bfloat16)) and torch.equal(sin[0], angles.sin().to(torch.bfloat16))
    # Calibration: from a bf16-rounded inv_freq the angle at position 330 is off by 0.40 rad (measured), the tables
    # by up to 0.60 before position 512; so the equality above is what keeps the original's numbers.
    rounded = positions[0, :, None].float() * inv_freq.to(torch.bfloat16).float()
    assert (rounded[330] - angles[330, :64]).abs().max() > 0.3
    model.float()
    assert torch.equal(model.llm.model.rotary_emb.inv_freq, inv_freq)


def test_sam_positional_encoding_follows_the_model_dtype_as_the_originals_fork(head_dim_128_model):
    pe_layer = head_dim_128_model.sam.prompt_encoder.pe_layer
    grid = head_dim_128_model.sam.prompt_encoder.image_embedding_size
    fp32 = dense_positional_encoding(pe_layer, grid, torch.float32)
    assert torch.equal(fp32, pe_layer(grid).unsqueeze(0))          # segment-anything's own float32 encoding
    bf16 = dense_positional_encoding(pe_layer, grid, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.shape == fp32.shape
    difference = (bf16.float() - fp32).abs().max().item()
    # Computed in bf16 throughout (grid, matrix product, 2 pi, sin/cos), the encoding differs from the float32 one
    # by more than rounding the result would (<= 2^-9 near 1): measured 0.16 at most over 5 random matrices.
    assert 2 ** -8 < difference < 0.25


def test_decoder_gets_the_bf16_encoding_and_masks_are_upsampled_in_float32(head_dim_128_model):
    model = head_dim_128_model.to(torch.bfloat16)
    seen = {}
    decoder = model.sam.mask_decoder
    pre = decoder.register_forward_pre_hook(lambda m, a, kw: seen.update(pe=kw["image_pe"]), with_kwargs=True)
    post = decoder.register_forward_hook(lambda m, a, out: seen.update(low=out[0]))
    try:
        side = model.config.sam.embedding_grid
        embedding = torch.randn(1, model.config.sam.prompt_embed_dim, side, side).to(torch.bfloat16)
        hidden = torch.randn(2, model.config.hidden_size).to(torch.bfloat16)
        logits = model.decode_masks(embedding, hidden, (200, 150), (90, 70))
    finally:
        pre.remove()
        post.remove()
    encoder = model.sam.prompt_encoder
    assert torch.equal(seen["pe"], dense_positional_encoding(encoder.pe_layer, encoder.image_embedding_size,
                                                             torch.bfloat16))
    size = model.config.sam.image_size
    low = seen["low"]
    assert low.dtype == torch.bfloat16
    expected = F.interpolate(low.float(), (size, size), mode="bilinear", align_corners=False)[..., :200, :150]
    expected = F.interpolate(expected, (90, 70), mode="bilinear", align_corners=False)[:, 0]
    assert logits.dtype == torch.float32 and torch.equal(logits, expected)
    model.float()


def test_fp16_neck_runs_in_float32():
    from reasonseg.lisa.checkpoint import load_lisa

    model = load_lisa(FIXTURE / "ckpt").model
    neck = model.sam.image_encoder.neck
    x = torch.randn(1, neck[0].in_channels, 8, 8, generator=torch.Generator().manual_seed(0)) * 1000
    with torch.no_grad():
        reference = neck(x)                                       # float32
        half = neck.half()
        guarded = half(x.half())
        unguarded = torch.nn.Sequential.forward(half, x.half())  # what stock segment-anything does in fp16
    assert guarded.dtype == torch.float16 and torch.isfinite(guarded).all()
    # In float16 LayerNorm2d's variance overflows to inf and the normalised activations collapse (to 0 here).
    assert not torch.allclose(unguarded.float(), reference, rtol=1e-2, atol=1e-2)
    # fp32 compute from fp16-rounded weights, then one fp16 rounding: within a few fp16 ulps of float32's.
    assert torch.allclose(guarded.float(), reference, rtol=1e-2, atol=1e-2)


def test_default_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert default_precision("cuda") == default_precision("cuda:1") == "bf16"
    assert default_precision("cpu") == "fp32"


def test_quantization_covers_every_linear_outside_sam_as_the_original(head_dim_128_model):
    names = quantizable_linears(head_dim_128_model)
    assert "llm.lm_head" in names and "mm_projector" in names
    assert {"text_hidden_fcs.0", "text_hidden_fcs.2"} <= set(names)
    assert "llm.model.layers.0.self_attn.q_proj" in names and "llm.model.layers.1.mlp.down_proj" in names
    assert not any(n.startswith(("sam.", "vision_tower.")) for n in names)
    linears = [n for n, m in head_dim_128_model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert set(linears) - set(names) == {n for n in linears if n.startswith(("sam.", "vision_tower."))}


@pytest.mark.slow
def test_bf16_on_the_golden_fixture_stays_near_the_originals_fp32_logits():
    reference = json.loads((FIXTURE / "reference" / "inputs.json").read_text(encoding="utf-8"))
    predictor = LisaPredictor.from_pretrained(FIXTURE / "ckpt", device="cpu", precision="bf16")
    assert predictor.dtype == torch.bfloat16
    for case in reference["inputs"]:
        forced = case["teacher_forced"]
        assert predictor.prompt_ids(case["query"], case["is_sentence"]) == forced["input_ids"]
        logits = predictor.segment([(FIXTURE / case["image"], case["query"], case["is_sentence"])],
                                   return_logits=True)[0]
        original = np.load(FIXTURE / forced["logits"])[0]
        # Measured on CPU: at most 3.3e-3 from the original's fp32 logits (which span about +-0.17), 0.25-0.36 % of
        # the pixels flipped; bf16 itself, not a difference of method (no bf16 output of the original exists).
        assert logits.dtype == np.float32 and np.abs(logits - original).max() < 1e-2
        assert ((logits > 0) == (original > 0)).mean() > 0.99
