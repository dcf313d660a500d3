"""Model configurations: the LLM, the CLIP vision tower, the projector and SAM, for each size and LLaVA base.

A `LisaConfig` round-trips through the released `config.json` (LLaVA fields on top of a LLaMA config). SAM's sizes
are not in the released config (the reference hard-codes ViT-H); we write them under `reasonseg_sam` only when they
differ from ViT-H, so a released directory reads as ViT-H and a tiny one keeps its small SAM.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..sam import SamConfig

LLAVA_VERSIONS = ("v1", "v1.5")
SIZES = ("tiny", "7b", "13b")
IMAGE_TOKEN_INDEX = -200  # the placeholder id of `<image>` in token ids before expansion (LLaVA's convention)
# The reference cuts every training sequence to `model_max_length - 255` token ids before the image is expanded,
# whatever the vision tower (255: CLIP-224's 256 patches less the placeholder). LLaVA-1.5's 576 patches so make the
# expanded sequence longer than model_max_length, as they do in the reference, rather than leave no text at all.
TRUNCATION_RESERVE = 255


@dataclass(frozen=True)
class VisionConfig:
    """The CLIP vision tower (only its shape; the weights live in the `mm_vision_tower` folder)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    projection_dim: int = 768

    @property
    def n_patches(self) -> int:
        # The CLS token is dropped ("patch" features), so an image becomes (side / patch)^2 tokens.
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class LisaConfig:
    llm: dict                                 # LlamaConfig keyword arguments (hidden_size, num_hidden_layers, ...)
    vision: VisionConfig = VisionConfig()
    projector: str = "linear"                 # "linear" (LLaVA v1) or "mlp2x_gelu" (LLaVA-1.5)
    vision_tower: str = "openai/clip-vit-large-patch14"
    select_layer: int = -2
    use_im_start_end: bool = True
    out_dim: int = 256
    sam: SamConfig = field(default_factory=SamConfig)

    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def n_image_tokens(self) -> int:
        return self.vision.n_patches


# The tiny SAM reads 256 x 256 inputs (same resize/normalise/pad recipe, smaller side) so CPU tests stay quick;
# every real size uses 1024 exactly.
TINY_SAM = SamConfig(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                     window_size=4, patch_size=16, image_size=256, prompt_embed_dim=64, decoder_depth=2,
                     decoder_mlp_dim=128, decoder_num_heads=2, iou_head_hidden_dim=32)

_LLM_BASE = {"rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
             "pad_token_id": 0, "tie_word_embeddings": False, "hidden_act": "silu"}
_LLM = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "max_position_embeddings": 1024},
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab_size": 32003},
    "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
            "num_key_value_heads": 40, "vocab_size": 32003},
}
_VISION = {
    ("tiny", "v1"): VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                 image_size=28, patch_size=14, projection_dim=32),
    ("tiny", "v1.5"): VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                   image_size=42, patch_size=14, projection_dim=32),
    ("full", "v1"): VisionConfig(),                    # CLIP ViT-L/14 at 224: 256 patch tokens
    ("full", "v1.5"): VisionConfig(image_size=336),    # CLIP ViT-L/14 at 336: 576 patch tokens
}
_TOWER = {"v1": "openai/clip-vit-large-patch14", "v1.5": "openai/clip-vit-large-patch14-336"}


def preset(size: str, llava: str = "v1") -> LisaConfig:
    """The configuration of `lisa init --size SIZE --llava LLAVA` (vocab_size is set from the tokenizer later)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if llava not in LLAVA_VERSIONS:
        raise ValueError(f"unknown LLaVA version {llava!r}; choose one of {', '.join(LLAVA_VERSIONS)}")
    llm = {**_LLM_BASE, **_LLM[size]}
    vision = _VISION[("tiny" if size == "tiny" else "full", llava)]
    sam = TINY_SAM if size == "tiny" else SamConfig()
    projector = "linear" if llava == "v1" else "mlp2x_gelu"
    out_dim = sam.prompt_embed_dim
    return LisaConfig(llm=llm, vision=vision, projector=projector, vision_tower=_TOWER[llava], sam=sam,
                      out_dim=out_dim)


_LLAMA_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "max_position_embeddings", "rms_norm_eps", "vocab_size", "bos_token_id", "eos_token_id",
               "pad_token_id", "tie_word_embeddings", "hidden_act", "rope_theta", "initializer_range")


def to_released_config(config: LisaConfig, torch_dtype: str = "bfloat16") -> dict:
    """The `config.json` of a released LISA directory (LLaVA `model_type`, LISA's extra fields)."""
    doc = {"architectures": ["LISAForCausalLM"], "model_type": "llava", "torch_dtype": torch_dtype,
           **{k: v for k, v in config.llm.items() if k in _LLAMA_KEYS},
           "mm_vision_tower": config.vision_tower, "mm_hidden_size": config.vision.hidden_size,
           "mm_vision_select_layer": config.select_layer, "mm_vision_select_feature": "patch",
           "mm_use_im_start_end": config.use_im_start_end, "mm_use_im_patch_token": False,
           "use_mm_proj": True, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": True,
           "image_aspect_ratio": "square", "train_mask_decoder": True, "out_dim": config.out_dim,
           # what the original's LisaModel sets on its config, and `vision_tower`, which its loader reads
           "vision_tower": config.vision_tower, "image_grid_pinpoints": None, "pretrain_mm_mlp_adapter": None,
           "use_cache": False, "pretraining_tp": 1, "rope_scaling": None}
    if config.projector != "linear":
        doc["mm_projector_type"] = config.projector
    if config.sam != SamConfig():
        doc["reasonseg_sam"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config.sam).items()}
    return doc


def from_released_config(doc: dict, vision: VisionConfig) -> LisaConfig:
    """Read a released `config.json`; `vision` comes from the vision tower's own config (its size decides the
    number of image tokens)."""
    llm = {k: doc[k] for k in _LLAMA_KEYS if k in doc}
    sam_doc = doc.get("reasonseg_sam")
    sam = SamConfig() if not sam_doc else SamConfig(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in sam_doc.items()})
    return LisaConfig(llm=llm, vision=vision, projector=doc.get("mm_projector_type", "linear"),
                      vision_tower=doc.get("mm_vision_tower") or doc.get("vision_tower") or _TOWER["v1"],
                      select_layer=int(doc.get("mm_vision_select_layer", -2)),
                      use_im_start_end=bool(doc.get("mm_use_im_start_end", True)),
                      out_dim=int(doc.get("out_dim", sam.prompt_embed_dim)), sam=sam)


def with_vocab(config: LisaConfig, vocab_size: int) -> LisaConfig:
    return replace(config, llm={**config.llm, "vocab_size": int(vocab_size)})
