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
from .conversation import (
    IMAGE,
    LLAVA_V1,
    VALIDATION_ANSWER,
    ConversationError,
    Tokenized,
    check_template,
    render,
    seg_token_id,
    tokenize,
    validation_question,
)
from .data import Example, collate
from .preprocess import PreparedImage, prepare_image, read_rgb

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PROMPT_MODES = ("teacher-forced", "generate")
CHAT_MAX_NEW_TOKENS = 512  # the original's chat.py


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_precision(device: str | torch.device) -> str:
    """bf16 on a GPU (the original's default), fp32 on CPU."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


@dataclass
class ChatReply:
    text: str                                 # the generated tokens decoded (final `</s>` left out)
    masks: np.ndarray                         # k x H x W bool, one per [SEG] of the reply
    token_ids: list[int] = field(default_factory=list)    # generated ids, `</s>` included when generated
    prompt: str = ""                          # the rendered conversation the model answered
    prompt_ids: list[int] = field(default_factory=list)   # its ids, IMAGE_TOKEN_INDEX (-200) for the image
    logits: np.ndarray | None = None          # k x H x W float32 mask logits (masks = logits > 0)


def quantizable_linears(model) -> list[str]:
    """The Linear layers the original quantizes with --load_in_8bit/4bit: every one outside SAM (its
    `llm_int8_skip_modules=["visual_model"]`), so LLaMA's layers, lm_head, the projector and text_hidden_fcs; the
    CLIP tower was loaded after quantization there and stays as it is here."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.startswith(("sam.", "vision_tower."))]


def quantize(model, bits: int) -> None:
    """Replace `quantizable_linears` by bitsandbytes layers as the original's BitsAndBytesConfig does: 8-bit
    LLM.int8() (threshold 6.0, no fp16 weights) or 4-bit NF4 with double quantization and fp16 compute. Needs a
    CUDA GPU and `bitsandbytes`."""
    if not torch.cuda.is_available():
        raise MethodError(f"--load-in-{bits}bit needs a CUDA GPU (bitsandbytes quantization does not run on CPU)",
                          hint="drop the flag, or use --precision bf16")
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise MethodError(f"--load-in-{bits}bit needs bitsandbytes", hint="pip install bitsandbytes") from None
    for name in quantizable_linears(model):
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        child = getattr(parent, child_name)
        weight = child.weight.data.to("cpu", torch.float16)
        if bits == 8:
            new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                      has_fp16_weights=False, threshold=6.0)
            new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                    compute_dtype=torch.float16, compress_statistics=True, quant_type="nf4")
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4")
        if child.bias is not None:
            new.bias = torch.nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
        setattr(parent, child_name, new.to("cuda"))


class LisaPredictor:
    """A loaded model with its tokenizer and image processor; keeps the last image's encodings for reuse.

    Reproduces the original's inputs and outputs (docs/lisa.md): `prompt_ids` are its token ids, `prepare(image)`
    its two input tensors, `segment(..., return_logits=True)` and `chat(...).logits` its mask logits.
    """

    def __init__(self, model, tokenizer, processor, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, conv_type: str = LLAVA_V1):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.device, self.dtype = torch.device(device), dtype
        self.conv_type = check_template(conv_type)
        self.seg_id = seg_token_id(tokenizer)
        self._cache: tuple[str, PreparedImage, torch.Tensor] | None = None

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | None = None, precision: str | None = None,
                        load_in: int | None = None, vision_tower: str | None = None,
                        conv_type: str = LLAVA_V1) -> LisaPredictor:
        """Load a released-layout folder. `device`: default cuda when available, else cpu; `precision`: default
        bf16 on cuda, fp32 on cpu; `load_in`: 8 or 4 (bitsandbytes, CUDA); `vision_tower`: a folder or hub id
        overriding config.json's; `conv_type`: llava_v1 or llava_llama_2 (chat)."""
        from .checkpoint import load_lisa
        from .preprocess import ClipPreprocessor

        device = device or default_device()
        precision = precision or default_precision(device)
        if precision not in PRECISIONS:
            raise MethodError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if load_in and not str(device).startswith("cuda"):
            raise MethodError(f"--load-in-{load_in}bit needs a CUDA device (got {device!r})",
                              hint="pass --device cuda on a GPU machine, or drop the flag")
        check_template(conv_type)
        dtype = PRECISIONS[precision]
        loaded = load_lisa(directory, device="cpu" if load_in else device, dtype=dtype, vision_tower=vision_tower)
        if load_in:
            quantize(loaded.model, load_in)
            loaded.model.to(device)
        processor = ClipPreprocessor.from_pretrained(loaded.vision_tower_path)
        return cls(loaded.model, loaded.tokenizer, processor, device, dtype, conv_type)

    # ---------------------------------------------------------------- images
    def prepare(self, image: np.ndarray | str | os.PathLike) -> PreparedImage:
        """The two branches' input tensors (`.sam`, `.clip`: 3 x H x W float32) and the sizes."""
        return self._encoded(image)[0]

    def _encoded(self, image: np.ndarray | str | os.PathLike, key: str | None = None
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

    # ---------------------------------------------------------------- prompts
    def prompt_ids(self, text: str, is_sentence: bool) -> list[int]:
        """The teacher-forced validation sequence's ids (question template, answer `[SEG].`, `</s>`), with
        IMAGE_TOKEN_INDEX (-200) for the image."""
        return self._validation_tokens(text, is_sentence).input_ids

    def _validation_tokens(self, text: str, is_sentence: bool) -> Tokenized:
        prompt, _ = render([(validation_question(text, is_sentence), VALIDATION_ANSWER)],
                           self.model.config.use_im_start_end, self.conv_type)
        return tokenize(self.tokenizer, prompt)

    # ---------------------------------------------------------------- chat
    @torch.no_grad()
    def chat(self, image, question: str, history: Sequence[tuple[str, str]] = (),
             max_new_tokens: int = CHAT_MAX_NEW_TOKENS, use_cache: bool = True) -> ChatReply:
        """One assistant reply to `question` after `history` ((question, answer) turns; the first question holds
        `<image>`, added in front with a newline when absent, as the original's chat.py does)."""
        turns = list(history) + [(question, None)]
        if IMAGE not in turns[0][0]:
            turns[0] = (IMAGE + "\n" + turns[0][0], turns[0][1])
        prompt, _ = render(turns, self.model.config.use_im_start_end, self.conv_type)
        prompt_ids = tokenize(self.tokenizer, prompt).input_ids
        prepared, embedding = self._encoded(image)
        new_ids, seg_hidden = self.model.generate(
            prepared.clip[None].to(self.device, self.dtype), torch.tensor([prompt_ids], device=self.device),
            self.tokenizer.eos_token_id, max_new_tokens, use_cache)
        logits = self.model.decode_masks(embedding, seg_hidden, prepared.resize_size, prepared.original_size)
        logits = logits.float().cpu().numpy()
        shown = new_ids[:-1] if new_ids and new_ids[-1] == self.tokenizer.eos_token_id else new_ids
        # the original's chat.py cleans the decoded text so: newlines dropped, the double space 4.31's decode puts
        # before text that follows an added token ("[SEG]  .") made single
        text = self.tokenizer.decode(shown).replace("\n", "").replace("  ", " ").strip()
        return ChatReply(text, logits > 0, new_ids, prompt, prompt_ids, logits)

    # ---------------------------------------------------------------- teacher-forced segmentation
    @torch.no_grad()
    def segment(self, items: Sequence[tuple[np.ndarray | str | os.PathLike, str, bool]],
                return_logits: bool = False) -> list[np.ndarray]:
        """H x W bool masks (or, `return_logits`, float32 logits before `> 0`) for (image, text, is_sentence)
        queries, in one batch, answer `[SEG].` forced."""
        examples, embeddings = [], []
        for image, text, is_sentence in items:
            prepared, embedding = self._encoded(image)
            examples.append(Example("", prepared, [self._validation_tokens(text, is_sentence)],
                                    np.zeros((1, *prepared.original_size), np.uint8)))
            embeddings.append(embedding)
        batch = collate(examples, self.tokenizer.pad_token_id).to(self.device, self.dtype)
        out = self.model(batch, with_logits=False, image_embeddings=torch.cat(embeddings))
        logits = [m[0].float().cpu().numpy() for m in out.mask_logits]
        return logits if return_logits else [m > 0 for m in logits]

    def predict_queries(self, pairs: Sequence[tuple[Sample, Query]], prompt_mode: str = "teacher-forced"
                        ) -> list[np.ndarray]:
        """H x W bool masks of a split's queries: one teacher-forced batch, or one generation per query. A query
        text holding one of LISA's control tokens fails naming its sample."""
        for sample, query in pairs:
            try:
                validation_question(query.text, query.is_sentence)
            except ConversationError as exc:
                raise MethodError(exc.message, sample_id=sample.id, field=f"texts[{query.text_index}]",
                                  path=str(sample.image_path), hint=exc.hint) from None
        if prompt_mode == "generate":
            return [self.predict_query(s, q, prompt_mode) for s, q in pairs]
        return self.segment([(s.image_path, q.text, q.is_sentence) for s, q in pairs])

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
        return self.predictor.predict_queries(pairs, self.prompt_mode)

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
        masks = predictor.predict_queries(chunk, prompt_mode)
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

