import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import tiny_model  # noqa: E402

from reasonseg.lisa.checkpoint import load_lisa  # noqa: E402
from reasonseg.lisa.config import IMAGE_TOKEN_INDEX  # noqa: E402
from reasonseg.lisa.conversation import IGNORE_INDEX, SYSTEM, render, seg_token_id, tokenize  # noqa: E402
from reasonseg.lisa.model import LisaBatch  # noqa: E402
from reasonseg.lisa.preprocess import sam_input, sam_resize_size  # noqa: E402


@pytest.fixture(scope="module", params=["v1", "v1.5"])
def loaded(request):
    return load_lisa(tiny_model(request.param))


def test_template_and_labels_cover_only_answers(loaded):
    tok = loaded.tokenizer
    text, spans = render([("<image>\nWhat is it?", "Sure, [SEG]."), ("And this?", "It is [SEG].")])
    assert text == (SYSTEM + " USER: <im_start><image><im_end>\nWhat is it? ASSISTANT: Sure, [SEG].</s>"
                    "USER: And this? ASSISTANT: It is [SEG].</s>")
    out = tokenize(tok, text, with_labels=True)
    assert out.input_ids.count(IMAGE_TOKEN_INDEX) == 1 and out.input_ids[0] == tok.bos_token_id
    kept = tok.decode([t for t in out.labels if t != IGNORE_INDEX])
    assert kept == "Sure, [SEG]  .</s>It is [SEG]  .</s>"  # 4.31's decode: a space after [SEG], one before "."
    assert seg_token_id(tok) == tok.token_to_id("[SEG]")
    prompt, _ = render([("<image>\nq", None)])
    assert prompt.endswith("ASSISTANT:")


def _batch(model, sequences: list[list[int]], image_index: list[int], n_images: int) -> LisaBatch:
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for n, s in enumerate(sequences):
        ids[n, :len(s)] = torch.tensor(s)
        attention[n, :len(s)] = 1
    side = model.vision_tower.config.image_size
    sam_side = model.config.sam.image_size
    g = torch.Generator().manual_seed(0)
    return LisaBatch(torch.randn(n_images, 3, sam_side, sam_side, generator=g),
                     torch.randn(n_images, 3, side, side, generator=g), ids, attention,
                     torch.tensor(image_index), [(sam_side, sam_side - 40)] * n_images, [(50, 60)] * n_images)


@pytest.mark.parametrize("n_seg", [0, 1, 3])
def test_seg_positions_follow_the_patch_count(loaded, n_seg):
    model = loaded.model
    seg = model.seg_token_id
    p = model.n_image_tokens
    assert p == (4 if loaded.config.projector == "linear" else 9)
    body = [5, 6] + [seg, 7] * n_seg
    seq = [1, 8, IMAGE_TOKEN_INDEX, 9] + body
    other = [1, IMAGE_TOKEN_INDEX, 10, seg, 11]
    batch = _batch(model, [seq, other, seq[:3] + [seg]], [0, 1, 1], 2)
    features = model.encode_clip(batch.images_clip)
    expanded = model.expand(batch.input_ids, batch.attention_mask, features, batch.image_index)
    where = model.seg_positions(batch.input_ids, batch.attention_mask, expanded.positions)
    expected = [j + (p - 1) - 1 for j, t in enumerate(seq) if t == seg]
    assert where[0].tolist() == expected
    assert where[1].tolist() == [3 + (p - 1) - 1]
    assert where[2].tolist() == [3 + (p - 1) - 1]
    # The expanded sequence holds the image's projected patches where <image> stood.
    assert torch.allclose(expanded.embeds[0, 2:2 + p], features[0])
    assert torch.allclose(expanded.embeds[1, 1:1 + p], features[1])
    with torch.no_grad():
        out = model(batch)
    assert [m.shape[0] for m in out.mask_logits] == [n_seg, 2]  # image 1 gets the [SEG]s of sequences 1 and 2
    assert all(m.shape[1:] == (50, 60) for m in out.mask_logits)
    if n_seg:
        # Independently: run the LLM on the expanded sequence and decode the state one before the last [SEG].
        with torch.no_grad():
            hidden = model.llm.model(inputs_embeds=expanded.embeds[:1, :expanded.positions[0][-1] + 1]
                                     ).last_hidden_state
            direct = model.decode_masks(model.encode_sam(batch.images_sam[:1]), hidden[0, expected[-1:]],
                                        batch.resize_sizes[0], (50, 60))
        assert torch.allclose(direct[0], out.mask_logits[0][-1], atol=1e-4)


def test_generation_with_cache_matches_the_naive_loop(loaded):
    model, tok = loaded.model, loaded.tokenizer
    prompt, _ = render([("<image>\nPlease segment the red circle.", None)])
    ids = torch.tensor([tokenize(tok, prompt).input_ids])
    image = torch.randn(1, 3, model.vision_tower.config.image_size, model.vision_tower.config.image_size)
    cached, h1 = model.generate(image, ids, tok.eos_token_id, 12, use_cache=True)
    naive, h2 = model.generate(image, ids, tok.eos_token_id, 12, use_cache=False)
    assert cached == naive and len(cached) > 0
    assert h1.shape == h2.shape


def test_sam_preprocessing_is_resize_longest_normalize_pad():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    x, (h, w) = sam_input(image)
    assert (h, w) == sam_resize_size(300, 400) == (768, 1024)
    assert x.shape == (3, 1024, 1024)
    assert torch.all(x[:, h:, :] == 0) and torch.all(x[:, :, w:] == 0)
    # An image of one colour stays that colour after resizing: check the normalisation constants.
    flat = np.full((10, 7, 3), (10, 200, 90), np.uint8)
    y, (fh, fw) = sam_input(flat)
    assert (fh, fw) == (1024, int(7 * 1024 / 10 + 0.5))
    expected = (torch.tensor([10.0, 200.0, 90.0]) - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor(
        [58.395, 57.12, 57.375])
    assert torch.allclose(y[:, 500, 300], expected, atol=1e-5)


def test_bf16_model_segments_and_keeps_sams_positional_encoding_in_float32(tmp_path):
    import cv2
    import numpy as np
    import torch

    from reasonseg.lisa.checkpoint import new_model
    from reasonseg.lisa.infer import LisaPredictor

    model, tokenizer, processor = new_model("tiny", "v1", dtype=torch.bfloat16)
    model = model.to(torch.bfloat16)  # a later cast must not undo it either
    assert model.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    image = tmp_path / "x.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    masks = LisaPredictor(model, tokenizer, processor, "cpu", torch.bfloat16).segment([(image, "the cup", False)])
    assert len(masks) == 1 and masks[0].shape == (90, 120)
