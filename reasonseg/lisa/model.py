"""The LISA model: LLaVA (CLIP vision tower + projector + LLaMA) and SAM, joined by embedding-as-mask.

Each `[SEG]` in a sequence yields one mask: the LLM's last-layer hidden state at the position *one before* the
`[SEG]` (the state that predicts it) goes through `text_hidden_fcs` and becomes the one sparse prompt token of SAM's
mask decoder (dense prompt = SAM's no-mask embedding, single-mask output). Positions are counted in the *expanded*
sequence, where each `<image>` placeholder became as many embeddings as the vision tower has patches (256 for
CLIP-224, 576 for CLIP-336) — computed from the tower, not hard-coded.

A batch holds B images and N >= B sequences (the reference puts one conversation per sampled class, all on the
same image); `image_index[n]` says which image sequence n shows. Masks of an image are ordered by their `[SEG]`
across its sequences, in batch order.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from ..sam import build_sam
from .config import IMAGE_TOKEN_INDEX, LisaConfig, VisionConfig


def build_projector(kind: str, vision_dim: int, hidden: int) -> nn.Module:
    """LLaVA v1: one Linear; LLaVA-1.5 (`mlp2x_gelu`): Linear, GELU, Linear."""
    if kind == "linear":
        return nn.Linear(vision_dim, hidden)
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(vision_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    raise ValueError(f"unknown projector type {kind!r} (linear or mlp2x_gelu)")


def build_text_hidden_fcs(hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim), nn.Dropout(0.0))


def build_vision_tower(vision: VisionConfig):
    """A random-initialised CLIP vision tower of this shape (released models load theirs from `mm_vision_tower`)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from .attention import CLIP_ATTENTION, register

    register()
    return CLIPVisionModel(CLIPVisionConfig(
        hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size,
        num_hidden_layers=vision.num_hidden_layers, num_attention_heads=vision.num_attention_heads,
        image_size=vision.image_size, patch_size=vision.patch_size, projection_dim=vision.projection_dim,
        hidden_act="quick_gelu", attn_implementation=CLIP_ATTENTION))


def vision_config_of(tower) -> VisionConfig:
    c = tower.config
    return VisionConfig(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                        image_size=c.image_size, patch_size=c.patch_size,
                        projection_dim=getattr(c, "projection_dim", 768))


def build_llm(llm: dict):
    """LLaMA with transformers 4.31's attention arithmetic (`attention.py`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .attention import LLAMA_ATTENTION, register

    register()
    return LlamaForCausalLM(LlamaConfig(**llm, attn_implementation=LLAMA_ATTENTION))


class Fp32UnderFp16Neck(nn.Sequential):
    """SAM's neck (conv, LayerNorm2d, conv, LayerNorm2d) that runs in float32 when its input is float16, as the
    original's SAM fork does (its LayerNorm overflows in float16); other dtypes run unchanged. Same children, so
    the same state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float16:
            return super().forward(x)
        from torch.func import functional_call

        y = x.float()
        for module in self:
            y = functional_call(module, {k: v.float() for k, v in module.named_parameters()}, (y,))
        return y.to(x.dtype)


def dense_positional_encoding(pe_layer: nn.Module, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """1 x C x h x w: SAM's dense positional encoding computed as the original's SAM fork computes it in a model of
    `dtype`: the Gaussian matrix, the coordinate grid and every operation in that dtype (bf16 under a bf16 model;
    the mask decoder was trained with it). In float32 this is segment-anything's `get_dense_pe` bit for bit."""
    gaussian = pe_layer.positional_encoding_gaussian_matrix.to(dtype)
    h, w = size
    grid = torch.ones((h, w), device=gaussian.device, dtype=dtype)
    y = (grid.cumsum(dim=0) - 0.5) / h
    x = (grid.cumsum(dim=1) - 0.5) / w
    coords = 2 * torch.stack([x, y], dim=-1) - 1
    coords = coords @ gaussian
    coords = 2 * math.pi * coords
    return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1).permute(2, 0, 1).unsqueeze(0)


@dataclass
class LisaBatch:
    """What the model reads. Sizes are (height, width); `resize_sizes` is each image's size inside SAM's 1024 pad."""

    images_sam: torch.Tensor            # B x 3 x 1024 x 1024, normalised and padded
    images_clip: torch.Tensor           # B x 3 x S x S
    input_ids: torch.Tensor             # N x L, right-padded; IMAGE_TOKEN_INDEX marks <image>
    attention_mask: torch.Tensor        # N x L
    image_index: torch.Tensor           # N: the image each sequence shows
    resize_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    labels: torch.Tensor | None = None  # N x L, IGNORE_INDEX outside the assistant's tokens
    masks: list[torch.Tensor] | None = None  # per image: k x H x W in {0, 1}, one per [SEG], in [SEG] order
    ids: list[str] = field(default_factory=list)

    def to(self, device, dtype: torch.dtype | None = None) -> LisaBatch:
        def image(x):
            return x.to(device=device, dtype=dtype or x.dtype)
        return LisaBatch(image(self.images_sam), image(self.images_clip), self.input_ids.to(device),
                         self.attention_mask.to(device), self.image_index.to(device), self.resize_sizes,
                         self.original_sizes, None if self.labels is None else self.labels.to(device),
                         None if self.masks is None else [m.to(device) for m in self.masks], self.ids)


@dataclass
class LisaOutput:
    logits: torch.Tensor | None       # N x L' x V over the expanded sequences (None when not asked for)
    labels: torch.Tensor | None       # N x L', aligned with logits
    mask_logits: list[torch.Tensor]   # per image: k x H x W at the original size (threshold at 0)
    seg_counts: list[int]             # per sequence: how many [SEG] it holds


@dataclass
class Expanded:
    embeds: torch.Tensor              # N x L' x H
    attention_mask: torch.Tensor      # N x L'
    labels: torch.Tensor | None
    positions: list[torch.Tensor]     # per sequence: the expanded index of each original token


class LisaModel(nn.Module):
    def __init__(self, config: LisaConfig, llm: nn.Module, vision_tower: nn.Module, mm_projector: nn.Module,
                 sam: Sam, text_hidden_fcs: nn.Sequential, seg_token_id: int):
        super().__init__()
        self.config = config
        self.llm = llm
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector
        self.sam = sam
        sam.image_encoder.neck.__class__ = Fp32UnderFp16Neck
        rotary = llm.model.rotary_emb
        # transformers computes inv_freq in float32 at construction; kept here so a cast of the model cannot round it
        # (a plain attribute, not a buffer: the state dict is unchanged).
        self.rotary_inv_freq = rotary.inv_freq.detach().float().clone()
        self._keep_float32()
        self.text_hidden_fcs = text_hidden_fcs
        self.seg_token_id = int(seg_token_id)

    @property
    def n_image_tokens(self) -> int:
        c = self.vision_tower.config
        return (c.image_size // c.patch_size) ** 2

    @property
    def dtype(self) -> torch.dtype:
        # the token embeddings: never quantized (the projector's weights are int8/uint8 under --load-in-8bit/4bit)
        return self.llm.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.text_hidden_fcs[0].weight.device

    # ------------------------------------------------------------------ image encoders (frozen)
    def encode_clip(self, images_clip: torch.Tensor) -> torch.Tensor:
        """B x P x H: patch features of the selected CLIP layer (CLS dropped), projected into the LLM."""
        with torch.no_grad():
            out = self.vision_tower(images_clip.to(self.vision_tower.dtype), output_hidden_states=True)
            features = out.hidden_states[self.config.select_layer][:, 1:]
        return self.mm_projector(features.to(self.dtype))

    def encode_sam(self, images_sam: torch.Tensor) -> torch.Tensor:
        # Frozen in the reference (no graph kept); with grad only when training makes the encoder trainable.
        trained = any(p.requires_grad for p in self.sam.image_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trained):
            return self.sam.image_encoder(images_sam.to(self.dtype))

    # ------------------------------------------------------------------ LLM input with images expanded
    def expand(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_features: torch.Tensor,
               image_index: torch.Tensor, labels: torch.Tensor | None = None) -> Expanded:
        """Replace each IMAGE_TOKEN_INDEX by its image's patch embeddings; right-pad the results."""
        embed = self.llm.get_input_embeddings()
        n_patches = image_features.shape[1]
        rows, label_rows, positions = [], [], []
        for n in range(input_ids.shape[0]):
            length = int(attention_mask[n].sum())
            ids = input_ids[n, :length]
            is_image = ids == IMAGE_TOKEN_INDEX
            extra = is_image.long() * (n_patches - 1)
            pos = torch.arange(length, device=ids.device) + torch.cumsum(extra, 0) - extra
            total = length + int(extra.sum())
            tokens = embed(ids.masked_fill(is_image, 0))
            row = tokens.new_zeros(total, tokens.shape[-1])
            row[pos[~is_image]] = tokens[~is_image]
            for j in torch.nonzero(is_image).flatten().tolist():
                start = int(pos[j])
                row[start:start + n_patches] = image_features[int(image_index[n])].to(row.dtype)
            rows.append(row)
            positions.append(pos)
            if labels is not None:
                lab = torch.full((total,), -100, dtype=labels.dtype, device=labels.device)
                lab[pos[~is_image]] = labels[n, :length][~is_image]
                label_rows.append(lab)
        width = max(r.shape[0] for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
        mask = torch.zeros(len(rows), width, dtype=attention_mask.dtype, device=attention_mask.device)
        for n, r in enumerate(rows):
            mask[n, :r.shape[0]] = 1
        padded_labels = None if labels is None else torch.stack(
            [F.pad(r, (0, width - r.shape[0]), value=-100) for r in label_rows])
        return Expanded(embeds, mask, padded_labels, positions)

    def seg_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      positions: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per sequence: expanded indices of the state one before each [SEG] (the state that predicts it)."""
        out = []
        for n, pos in enumerate(positions):
            ids = input_ids[n, :pos.shape[0]]
            seg = torch.nonzero(ids == self.seg_token_id).flatten()
            out.append(pos[seg] - 1)
        return out

    # ------------------------------------------------------------------ SAM decoding
    def _keep_float32(self) -> None:
        """Buffers that stay float32 whatever the model's dtype.

        LLaMA's rotary `inv_freq`: transformers 4.31 computed the cos/sin tables once, in float32, before the model
        was cast (then rounded them to the model dtype); current transformers recompute them on every forward from
        `inv_freq`, which `model.to(bf16)` would round (angle errors up to ~0.4 rad at position 330). Kept float32,
        today's tables equal 4.31's. SAM's Gaussian matrix: stored float32 so segment-anything's own float32 grid
        can use it; `dense_positional_encoding` casts it to the dtype the original computed in.
        """
        rotary = self.llm.model.rotary_emb
        device = rotary.inv_freq.device
        rotary.inv_freq = self.rotary_inv_freq.to(device)
        rotary.original_inv_freq = self.rotary_inv_freq.to(device)
        pe = self.sam.prompt_encoder.pe_layer
        pe.positional_encoding_gaussian_matrix = pe.positional_encoding_gaussian_matrix.float()

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._keep_float32()
        return self

    def decode_masks(self, image_embedding: torch.Tensor, seg_hidden: torch.Tensor, resize_size: tuple[int, int],
                     original_size: tuple[int, int]) -> torch.Tensor:
        """k x H x W mask logits for one image (`image_embedding` 1 x C x g x g) from k [SEG] hidden states."""
        h, w = original_size
        if seg_hidden.shape[0] == 0:
            return image_embedding.new_zeros(0, h, w, dtype=torch.float32)
        prompts = self.text_hidden_fcs(seg_hidden)
        encoder = self.sam.prompt_encoder
        k = prompts.shape[0]
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(k, -1, *encoder.image_embedding_size)
        low_res, _ = self.sam.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=dense_positional_encoding(encoder.pe_layer, encoder.image_embedding_size, prompts.dtype),
            sparse_prompt_embeddings=prompts[:, None, :], dense_prompt_embeddings=dense.to(prompts.dtype),
            multimask_output=False)
        # The original's SAM fork upsamples in float32 whatever the model dtype (and returns float32 logits).
        masks = self.sam.postprocess_masks(low_res.float(), input_size=tuple(resize_size), original_size=(h, w))
        return masks[:, 0]

    # ------------------------------------------------------------------ one pass (training / teacher forcing)
    def forward(self, batch: LisaBatch, with_logits: bool = True, image_embeddings: torch.Tensor | None = None
                ) -> LisaOutput:
        features = self.encode_clip(batch.images_clip)
        expanded = self.expand(batch.input_ids, batch.attention_mask, features, batch.image_index, batch.labels)
        hidden = self.llm.model(inputs_embeds=expanded.embeds, attention_mask=expanded.attention_mask,
                                use_cache=False).last_hidden_state
        logits = self.llm.lm_head(hidden) if with_logits else None
        where = self.seg_positions(batch.input_ids, batch.attention_mask, expanded.positions)
        if image_embeddings is None:
            image_embeddings = self.encode_sam(batch.images_sam)
        per_image: list[list[torch.Tensor]] = [[] for _ in range(batch.images_sam.shape[0])]
        for n, idx in enumerate(where):
            per_image[int(batch.image_index[n])].append(hidden[n, idx])
        mask_logits = []
        for i, states in enumerate(per_image):
            seg_hidden = torch.cat(states) if states else hidden.new_zeros(0, hidden.shape[-1])
            mask_logits.append(self.decode_masks(image_embeddings[i:i + 1], seg_hidden, batch.resize_sizes[i],
                                                 batch.original_sizes[i]))
        return LisaOutput(logits, expanded.labels, mask_logits, [int(x.numel()) for x in where])

    # ------------------------------------------------------------------ greedy generation
    @torch.no_grad()
    def generate(self, image_clip: torch.Tensor, input_ids: torch.Tensor, eos_token_id: int,
                 max_new_tokens: int = 64, use_cache: bool = True) -> tuple[list[int], torch.Tensor]:
        """Greedy decoding for one sequence (`input_ids`: 1 x L, ending with `ASSISTANT:`). Returns the new token
        ids (with the EOS when one was generated, as the original's `generate` returns it; it counts against
        `max_new_tokens`) and the hidden states that predicted each generated [SEG] (k x H).

        With `use_cache` the prompt is encoded once and each step feeds one token against the KV cache; without it
        every step re-runs the whole sequence (the naive path the benchmark compares against).
        """
        features = self.encode_clip(image_clip)
        ones = torch.ones_like(input_ids)
        expanded = self.expand(input_ids, ones, features, torch.zeros(1, dtype=torch.long, device=input_ids.device))
        embeds = expanded.embeds
        embed = self.llm.get_input_embeddings()
        new_ids: list[int] = []
        seg_states = []
        past = None
        step_input = embeds
        # transformers 5.2x names the KV cache `cache`; earlier releases `past_key_values`.
        cache_arg = "cache" if "cache" in inspect.signature(self.llm.model.forward).parameters else "past_key_values"
        for _ in range(max_new_tokens):
            out = self.llm.model(inputs_embeds=step_input, use_cache=use_cache, **{cache_arg: past})
            last = out.last_hidden_state[:, -1]
            token = int(self.llm.lm_head(last).float().argmax(-1))
            if token == eos_token_id:
                new_ids.append(token)
                break
            if token == self.seg_token_id:
                seg_states.append(last[0])
            new_ids.append(token)
            token_embed = embed(torch.tensor([[token]], device=input_ids.device))
            if use_cache:
                past, step_input = getattr(out, cache_arg), token_embed
            else:
                embeds = torch.cat([embeds, token_embed], dim=1)
                step_input = embeds
        hidden = torch.stack(seg_states) if seg_states else embeds.new_zeros(0, embeds.shape[-1])
        return new_ids, hidden


def build_lisa(config: LisaConfig, seg_token_id: int, vision_tower: nn.Module | None = None) -> LisaModel:
    """A random-initialised LISA of this configuration (load weights with `checkpoint.load_lisa`)."""
    tower = vision_tower if vision_tower is not None else build_vision_tower(config.vision)
    hidden = config.hidden_size
    model = LisaModel(config, build_llm(config.llm), tower,
                      build_projector(config.projector, tower.config.hidden_size, hidden),
                      build_sam(config.sam), build_text_hidden_fcs(hidden, config.out_dim), seg_token_id)
    model.vision_tower.requires_grad_(False)
    return model
