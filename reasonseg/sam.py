"""segment-anything's `Sam` built from one description of its sizes, for every part that needs a SAM.

LISA's mask branch, the SAM baselines (box prompts, automatic masks, oracles) and the tiny test models all build
SAM here: from explicit sizes (`SamConfig`; the defaults are ViT-H as `build_sam_vit_h`), or with the sizes read off
a published `sam_vit_*.pth` state dict (vit_h, vit_l, vit_b or smaller). torch and segment-anything are imported
when a model is built, so importing this module stays cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
SAM_DECODER_HEADS = 8  # every published SAM uses 8; a checkpoint does not store it


@dataclass(frozen=True)
class SamConfig:
    """Image encoder (ViT), prompt encoder and mask decoder sizes. Defaults: ViT-H."""

    encoder_embed_dim: int = 1280
    encoder_depth: int = 32
    encoder_num_heads: int = 16
    encoder_global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    window_size: int = 14
    patch_size: int = 16
    image_size: int = 1024
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = SAM_DECODER_HEADS
    iou_head_hidden_dim: int = 256
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3

    @property
    def embedding_grid(self) -> int:
        return self.image_size // self.patch_size


def build_sam(cfg: SamConfig):
    """A random-initialised segment-anything `Sam` of these sizes (load weights with `load_state_dict`)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from torch import nn

    grid = cfg.embedding_grid
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=cfg.encoder_depth, embed_dim=cfg.encoder_embed_dim, img_size=cfg.image_size, mlp_ratio=cfg.mlp_ratio,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=cfg.encoder_num_heads, patch_size=cfg.patch_size,
            qkv_bias=cfg.qkv_bias, use_rel_pos=True, global_attn_indexes=tuple(cfg.encoder_global_attn_indexes),
            window_size=cfg.window_size, out_chans=cfg.prompt_embed_dim),
        prompt_encoder=PromptEncoder(embed_dim=cfg.prompt_embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(cfg.image_size, cfg.image_size),
                                     mask_in_chans=cfg.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                                          mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_num_heads),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim),
        pixel_mean=list(SAM_PIXEL_MEAN), pixel_std=list(SAM_PIXEL_STD))


def sam_config_from_state_dict(state: dict) -> SamConfig:
    """The sizes of the SAM that wrote this state dict. Raises KeyError / IndexError when it is not a SAM's."""

    def count(prefix: str, suffix: str) -> int:
        n = 0
        while f"{prefix}.{n}.{suffix}" in state:
            n += 1
        return n

    proj = state["image_encoder.patch_embed.proj.weight"]
    dim, patch = int(proj.shape[0]), int(proj.shape[2])
    grid = int(state["image_encoder.pos_embed"].shape[1])
    depth = count("image_encoder.blocks", "norm1.weight")
    rel = [int(state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) for i in range(depth)]
    head_dim = int(state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
    windowed = [n for n in rel if n != 2 * grid - 1]
    return SamConfig(
        encoder_embed_dim=dim, encoder_depth=depth, encoder_num_heads=dim // head_dim,
        encoder_global_attn_indexes=tuple(i for i, n in enumerate(rel) if n == 2 * grid - 1),
        window_size=(windowed[0] + 1) // 2 if windowed else 14, patch_size=patch, image_size=grid * patch,
        prompt_embed_dim=int(state["image_encoder.neck.0.weight"].shape[0]),
        decoder_depth=count("mask_decoder.transformer.layers", "norm1.weight"),
        decoder_mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
        mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / dim,
        qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in state,
        mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
        num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
        iou_head_depth=count("mask_decoder.iou_prediction_head.layers", "weight"))
