import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import scratch, tiny_model  # noqa: E402

from reasonseg.lisa.checkpoint import (  # noqa: E402
    CheckpointError,
    build_from_llava,
    load_lisa,
    read_state_dict,
    save_lisa,
)


def _copy(src: Path, name: str) -> Path:
    import shutil

    dst = scratch(name) / "model"
    shutil.copytree(src, dst)
    return dst


def test_released_layout_and_strict_round_trip():
    folder = tiny_model("v1")
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(s.startswith("pytorch_model-0000") for s in shards)
    assert shards[-1].endswith(f"-of-{len(shards):05d}.bin")
    keys = set(index["weight_map"])
    for key in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight", "model.mm_projector.weight",
                "model.mm_projector.bias", "model.text_hidden_fcs.0.0.weight", "model.text_hidden_fcs.0.2.bias",
                "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                "model.layers.0.post_attention_layernorm.weight",
                "model.visual_model.image_encoder.patch_embed.proj.weight",
                "model.visual_model.prompt_encoder.no_mask_embed.weight",
                "model.visual_model.mask_decoder.output_upscaling.0.weight"):
        assert key in keys, key
    assert not any("vision_tower" in k for k in keys)  # CLIP is loaded from mm_vision_tower
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava" and config["mm_use_im_start_end"] is True
    assert config["mm_vision_select_layer"] == -2 and config["train_mask_decoder"] is True
    assert config["mm_vision_tower"] == "clip-vision"
    loaded = load_lisa(folder)
    assert loaded.config.projector == "linear" and loaded.model.n_image_tokens == 4
    files = read_state_dict(folder)
    state = loaded.model.state_dict()
    assert torch.equal(files["model.text_hidden_fcs.0.2.weight"], state["text_hidden_fcs.2.weight"])
    assert torch.equal(files["model.visual_model.mask_decoder.iou_token.weight"],
                       state["sam.mask_decoder.iou_token.weight"])
    assert torch.equal(files["lm_head.weight"], state["llm.lm_head.weight"])
    assert len(loaded.tokenizer) == config["vocab_size"]


def test_llava15_uses_mlp_projector_and_576_style_patch_count():
    folder = tiny_model("v1.5")
    keys = set(json.loads((folder / "pytorch_model.bin.index.json").read_text())["weight_map"])
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.weight"} <= keys
    assert "model.mm_projector.weight" not in keys
    loaded = load_lisa(folder)
    assert loaded.config.projector == "mlp2x_gelu"
    assert loaded.model.n_image_tokens == 9  # 42 px / 14 px patches, squared (576 for CLIP-336)


def _rewrite_shard(folder: Path, edit) -> None:
    index_path = folder / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"]["model.text_hidden_fcs.0.0.weight"]
    state = torch.load(shard, weights_only=True)
    edit(state, index["weight_map"])
    torch.save(state, shard)
    index_path.write_text(json.dumps(index))


def test_renamed_key_fails_naming_it():
    folder = _copy(tiny_model("v1"), "renamed")

    def rename(state, weight_map):
        state["model.text_hidden_fc.0.0.weight"] = state.pop("model.text_hidden_fcs.0.0.weight")
        weight_map["model.text_hidden_fc.0.0.weight"] = weight_map.pop("model.text_hidden_fcs.0.0.weight")
    _rewrite_shard(folder, rename)
    with pytest.raises(CheckpointError, match=r"model\.text_hidden_fc\.0\.0\.weight"):
        load_lisa(folder)


def test_missing_key_fails_naming_it():
    folder = _copy(tiny_model("v1"), "missing")

    def drop(state, weight_map):
        del state["model.text_hidden_fcs.0.0.weight"]
        del weight_map["model.text_hidden_fcs.0.0.weight"]
    _rewrite_shard(folder, drop)
    with pytest.raises(CheckpointError, match=r"missing key 'model\.text_hidden_fcs\.0\.0\.weight'"):
        load_lisa(folder)


def test_wrong_shape_and_old_rotary_buffers():
    folder = _copy(tiny_model("v1"), "shape")

    def edit(state, weight_map):
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # old transformers wrote these
        weight_map["model.layers.0.self_attn.rotary_emb.inv_freq"] = weight_map["model.text_hidden_fcs.0.0.weight"]
    _rewrite_shard(folder, edit)
    load_lisa(folder)  # ignored, documented

    def grow(state, weight_map):
        state["model.text_hidden_fcs.0.0.weight"] = torch.zeros(3, 3)
    _rewrite_shard(folder, grow)
    with pytest.raises(CheckpointError, match=r"text_hidden_fcs\.0\.0\.weight' has shape \(3, 3\)"):
        load_lisa(folder)


def test_safetensors_and_single_file_layouts():
    loaded = load_lisa(tiny_model("v1"))
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(loaded.vision_tower_path)
    out = save_lisa(loaded.model, loaded.tokenizer, scratch("st") / "m", safetensors=True, image_processor=processor)
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    again = load_lisa(out)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    with pytest.raises(CheckpointError, match="not empty"):
        save_lisa(loaded.model, loaded.tokenizer, out)


def test_fresh_model_from_llava_base_and_sam_pth():
    src = tiny_model("v1")
    loaded = load_lisa(src)
    base = scratch("llava") / "llava"
    base.mkdir()
    state = {k: v for k, v in read_state_dict(src).items()
             if not k.startswith(("model.visual_model.", "model.text_hidden_fcs."))}
    torch.save(state, base / "pytorch_model.bin")
    config = json.loads((src / "config.json").read_text())
    config["mm_vision_tower"] = str((src / "clip-vision").resolve())
    for key in ("train_mask_decoder", "out_dim"):
        config.pop(key)
    (base / "config.json").write_text(json.dumps(config))
    loaded.tokenizer.save_pretrained(str(base))
    sam_path = base.parent / "sam.pth"
    torch.save(loaded.model.sam.state_dict(), sam_path)
    fresh = build_from_llava(base, sam_path)
    assert torch.equal(fresh.model.llm.lm_head.weight, loaded.model.llm.lm_head.weight)
    assert torch.equal(fresh.model.sam.mask_decoder.iou_token.weight, loaded.model.sam.mask_decoder.iou_token.weight)
    bad = {("x." + k): v for k, v in loaded.model.sam.state_dict().items()}
    torch.save(bad, sam_path)
    with pytest.raises(CheckpointError, match="SAM key"):
        build_from_llava(base, sam_path)
