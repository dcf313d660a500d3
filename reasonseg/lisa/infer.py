"""Inference: chat (greedy generation, one mask per generated `[SEG]`) and split prediction.

`predict_split` uses the reference's validation prompts with the answer `[SEG].` teacher-forced (one forward pass per
batch of queries; the default) or, with `prompt_mode="generate"`, free generation per query (no `[SEG]` -> empty
mask). Under `torchrun`/`accelerate launch` each rank takes every world-th query and rank 0 gathers them, so every
query is predicted exactly once (the reference pads the last shard with repeats and counts them twice).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import MethodError
from ..schema import Prediction, Query, Sample
from .conversation import render, seg_token_id, tokenize, validation_question
from .data import Example, collate
from .preprocess import PreparedImage, prepare_image, read_rgb

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROMPT_MODES = ("teacher-forced", "generate")


@dataclass
class ChatReply:
    text: str
    masks: np.ndarray                         # k x H x W bool, one per [SEG] of the reply
    token_ids: list[int] = field(default_factory=list)
    prompt: str = ""                          # the rendered conversation the model answered


def quantize_llm(model, bits: int) -> None:
    """Replace the LLM's decoder Linear layers by bitsandbytes 8-bit or 4-bit ones (SAM and CLIP stay as they are,
    as in the reference). Needs a CUDA GPU and `bitsandbytes`."""
    if not torch.cuda.is_available():
        raise MethodError(f"--load-in-{bits}bit needs a CUDA GPU (bitsandbytes quantization does not run on CPU)",
                          hint="drop the flag, or use --precision bf16")
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise MethodError(f"--load-in-{bits}bit needs bitsandbytes", hint="pip install bitsandbytes") from None
    layers = model.llm.model.layers
    for parent in layers.modules():
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            weight = child.weight.data.to("cpu", torch.float16)
            if bits == 8:
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False, threshold=6.0)
                new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=torch.bfloat16, quant_type="nf4")
                new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                new.bias = torch.nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
            setattr(parent, name, new.to("cuda"))


class LisaPredictor:
    """A loaded model with its tokenizer and image processor; keeps the last image's encodings for reuse."""

    def __init__(self, model, tokenizer, processor, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.device, self.dtype = torch.device(device), dtype
        self.seg_id = seg_token_id(tokenizer)
        self._cache: tuple[str, PreparedImage, torch.Tensor] | None = None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
                        load_in: int | None = None, vision_tower: str | None = None) -> LisaPredictor:
        from transformers import CLIPImageProcessor

        from .checkpoint import load_lisa

        if precision not in PRECISIONS:
            raise MethodError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if load_in and not str(device).startswith("cuda"):
            raise MethodError(f"--load-in-{load_in}bit needs a CUDA device (got {device!r})",
                              hint="pass --device cuda on a GPU machine, or drop the flag")
        dtype = PRECISIONS[precision]
        loaded = load_lisa(directory, device="cpu" if load_in else device, dtype=dtype, vision_tower=vision_tower)
        if load_in:
            quantize_llm(loaded.model, load_in)
            loaded.model.to(device)
        processor = CLIPImageProcessor.from_pretrained(loaded.vision_tower_path)
        return cls(loaded.model, loaded.tokenizer, processor, device, dtype)

    # ---------------------------------------------------------------- images
    def prepare(self, image: np.ndarray | str | os.PathLike, key: str | None = None
                ) -> tuple[PreparedImage, torch.Tensor]:
        """The prepared image and SAM's embedding of it, reused while the same `key` (image path) comes back."""
        if key is None and not isinstance(image, np.ndarray):
            key = str(image)
        if key is not None and self._cache and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        rgb = read_rgb(image) if not isinstance(image, np.ndarray) else image
        prepared = prepare_image(rgb, self.processor, self.model.config.sam.image_size)
        with torch.no_grad():
            embedding = self.model.encode_sam(prepared.sam[None].to(self.device, self.dtype))
        if key is not None:
            self._cache = (key, prepared, embedding)
        return prepared, embedding

    # ---------------------------------------------------------------- chat
    @torch.no_grad()
    def chat(self, image, question: str, history: Sequence[tuple[str, str]] = (), max_new_tokens: int = 64,
             use_cache: bool = True) -> ChatReply:
        """One assistant reply to `question` after `history` ((question, answer) turns; the first question holds
        `<image>`, added in front when absent)."""
        turns = list(history) + [(question, None)]
        if "<image>" not in turns[0][0]:
            turns[0] = ("<image>\n" + turns[0][0], turns[0][1])
        prompt, _ = render(turns, self.model.config.use_im_start_end)
        ids = torch.tensor([tokenize(self.tokenizer, prompt).input_ids], device=self.device)
        prepared, embedding = self.prepare(image)
        new_ids, seg_hidden = self.model.generate(prepared.clip[None].to(self.device, self.dtype), ids,
                                                  self.tokenizer.eos_token_id, max_new_tokens, use_cache)
        logits = self.model.decode_masks(embedding, seg_hidden, prepared.resize_size, prepared.original_size)
        text = self.tokenizer.decode(new_ids, skip_special_tokens=False).strip()
        return ChatReply(text, (logits > 0).cpu().numpy(), new_ids, prompt)

    # ---------------------------------------------------------------- teacher-forced segmentation
    @torch.no_grad()
    def segment(self, items: Sequence[tuple[np.ndarray | str | os.PathLike, str, bool]]) -> list[np.ndarray]:
        """H x W bool masks for (image, text, is_sentence) queries, in one batch, answer `[SEG].` forced."""
        examples, embeddings = [], []
        for image, text, is_sentence in items:
            prepared, embedding = self.prepare(image)
            prompt, _ = render([(validation_question(text, is_sentence), "[SEG].")],
                               self.model.config.use_im_start_end)
            examples.append(Example("", prepared, [tokenize(self.tokenizer, prompt)],
                                    np.zeros((1, *prepared.original_size), np.uint8)))
            embeddings.append(embedding)
        batch = collate(examples, self.tokenizer.pad_token_id).to(self.device, self.dtype)
        out = self.model(batch, with_logits=False, image_embeddings=torch.cat(embeddings))
        return [(logits[0] > 0).cpu().numpy() for logits in out.mask_logits]

    def predict_query(self, sample: Sample, query: Query, prompt_mode: str = "teacher-forced") -> np.ndarray:
        if prompt_mode == "generate":
            question = validation_question(query.text, query.is_sentence)
            reply = self.chat(sample.image_path, question)
            return reply.masks[0] if len(reply.masks) else np.zeros((sample.height, sample.width), bool)
        return self.segment([(sample.image_path, query.text, query.is_sentence)])[0]


class LisaMethod:
    """The registry's `Method` (`reasonseg predict --method lisa`): batches of queries go through one teacher-forced
    forward pass, so the baselines runner (resumable partial files, `--batch-size`) drives it like any method."""

    def __init__(self, predictor: LisaPredictor, prompt_mode: str = "teacher-forced", weights: str | None = None):
        if prompt_mode not in PROMPT_MODES:
            raise MethodError(f"unknown prompt mode {prompt_mode!r}; choose one of {', '.join(PROMPT_MODES)}",
                              field="prompt_mode")
        self.predictor, self.prompt_mode, self.weights = predictor, prompt_mode, weights

    def predict(self, sample: Sample, query: Query) -> np.ndarray:
        return self.predictor.predict_query(sample, query, self.prompt_mode)

    def predict_batch(self, pairs: Sequence[tuple[Sample, Query]]) -> list[np.ndarray]:
        if self.prompt_mode == "generate":
            return [self.predict(sample, query) for sample, query in pairs]
        return self.predictor.segment([(s.image_path, q.text, q.is_sentence) for s, q in pairs])

    def describe(self) -> dict:
        return {"weights": self.weights, "prompt_mode": self.prompt_mode,
                "precision": str(self.predictor.dtype).replace("torch.", "")}


# ---------------------------------------------------------------------------------------------- whole splits

def shard(items: list, rank: int, world: int) -> list:
    """Every world-th item from `rank`: disjoint shards that cover the list, with no padding."""
    return items[rank::world]


def distributed_context() -> tuple[int, int]:
    """(rank, world size) from torchrun / accelerate's environment; (0, 1) when not launched that way."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def predict_split(predictor: LisaPredictor, samples: Sequence[Sample], protocol: str = "lisa",
                  prompt_mode: str = "teacher-forced", batch_size: int = 4, rank: int = 0, world: int = 1,
                  progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """Predictions of this rank's share of the split's queries; with world > 1 and torch.distributed initialised,
    rank 0 returns everyone's (others return []), each query once, in split order."""
    from ..submission import prediction_from_mask

    if prompt_mode not in PROMPT_MODES:
        raise MethodError(f"unknown prompt mode {prompt_mode!r}; choose one of {', '.join(PROMPT_MODES)}")
    queries = [(s, q) for s in samples for q in s.queries(protocol)]
    mine = shard(queries, rank, world)
    predictions: list[tuple[int, Prediction]] = []
    order = {(s.id, q.text_index): k for k, (s, q) in enumerate(queries)}
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        if prompt_mode == "generate":
            masks = [predictor.predict_query(s, q, prompt_mode) for s, q in chunk]
        else:
            masks = predictor.segment([(s.image_path, q.text, q.is_sentence) for s, q in chunk])
        for (sample, query), mask in zip(chunk, masks, strict=True):
            if mask.shape != (sample.height, sample.width):
                raise MethodError(f"the image reads as {mask.shape[0]}x{mask.shape[1]} but the annotation says "
                                  f"{sample.height}x{sample.width}", sample_id=sample.id, path=str(sample.image_path))
            predictions.append((order[(sample.id, query.text_index)],
                                prediction_from_mask(sample.id, query.text_index, mask)))
        if progress:
            progress(len(chunk))
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, predictions)
        if rank != 0:
            return []
        predictions = [p for part in gathered for p in part]
    seen: dict[tuple[str, int], Prediction] = {}
    for _, p in sorted(predictions, key=lambda kp: kp[0]):
        seen.setdefault((p.id, p.text_index), p)
    return list(seen.values())

