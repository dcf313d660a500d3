"""Training data: QA records (`qa.jsonl` of `reasonseg build qa`) and ReasonSeg train, tokenized with `llava_v1`.

An `Example` is one image with its token sequences and one target mask per `[SEG]`, in order. `collate` pads a list
of examples into a `LisaBatch` (used for training and for teacher-forced prediction alike).

QA records are `{"id", "source", "image", "conversations": [{"from": "human"|"gpt", "value"}...], "masks": [RLE...],
"ignore", "targets", "templates"}`; `image` is relative to its source's `image_root` in the folder's `build.json`.
The whole record is one conversation (every target its own turn). ReasonSeg train follows the reference: up to 3
distinct texts per image, each its own conversation, all with the image's mask (`mask == 1`); long texts fill the
long templates, short ones (lower-cased) the short templates. The QA `ignore` mask is not used by the loss (nor by
the reference's).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .config import IMAGE_TOKEN_INDEX
from .conversation import ANSWERS, IGNORE_INDEX, LONG_QUESTIONS, SHORT_QUESTIONS, Tokenized, render, tokenize
from .model import LisaBatch
from .preprocess import PreparedImage, prepare_image, read_rgb

MAX_TEXTS_PER_IMAGE = 3


@dataclass
class Example:
    id: str
    image: PreparedImage
    sequences: list[Tokenized]
    masks: np.ndarray             # k x H x W uint8, one per [SEG] across the sequences, in order


@dataclass(frozen=True)
class Recipe:
    """What an example is made of, before images are read and texts tokenized."""

    id: str
    image_path: Path
    conversations: tuple[tuple[tuple[str, str], ...], ...]   # per sequence: (question, answer) turns
    masks: tuple[dict, ...] = ()                              # RLE per [SEG] (QA records)
    mask_fn: object = None                                    # or: a callable returning the k x H x W masks


# ---------------------------------------------------------------------------------------------- QA records

def _turn_pairs(turns: list[dict], where: str, path: Path) -> tuple[tuple[str, str], ...]:
    pairs = []
    for k in range(0, len(turns) - 1, 2):
        human, gpt = turns[k], turns[k + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise DatasetError("turns must alternate human, gpt", path=str(path), sample_id=where,
                               field=f"conversations[{k}]")
        pairs.append((str(human["value"]), str(gpt["value"])))
    if not pairs:
        raise DatasetError("no human/gpt turn pair", path=str(path), sample_id=where, field="conversations")
    return tuple(pairs)


def read_qa(folder: str | os.PathLike) -> list[Recipe]:
    """The recipes of a QA folder (`qa.jsonl` + `build.json`), images resolved through each source's image root."""
    folder = Path(folder)
    path = folder / "qa.jsonl"
    if not path.exists():
        raise DatasetError("no qa.jsonl in the QA folder", path=str(folder), hint="build it with `reasonseg build qa`")
    roots = {}
    build = folder / "build.json"
    if build.exists():
        sources = json.loads(build.read_text(encoding="utf-8")).get("sources", {})
        roots = {name: Path(info.get("image_root", folder)) for name, info in sources.items()}
    recipes = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                rid, source, image = str(record["id"]), str(record["source"]), str(record["image"])
                turns, masks = record["conversations"], tuple(record.get("masks") or ())
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"malformed record ({exc})", path=f"{path}:{line_no}") from None
            pairs = _turn_pairs(turns, rid, path)
            n_seg = sum(answer.count("[SEG]") for _, answer in pairs)
            if n_seg != len(masks):
                raise DatasetError(f"{n_seg} [SEG] in the answers but {len(masks)} masks", path=f"{path}:{line_no}",
                                   sample_id=rid, field="masks")
            root = roots.get(source, folder)
            recipes.append(Recipe(rid, root / image, (pairs,), masks))
    return recipes


# ---------------------------------------------------------------------------------------------- ReasonSeg train

def _target_masks(sample, k: int) -> np.ndarray:
    from ..masks import rasterize_shapes
    from ..schema import TARGET

    mask = (rasterize_shapes(sample.shapes, sample.height, sample.width) == TARGET).astype(np.uint8)
    return np.repeat(mask[None], k, axis=0)


class _Masks:
    """A picklable mask maker for one sample and k copies (ReasonSeg train gives every text the same mask)."""

    def __init__(self, sample, k: int):
        self.sample, self.k = sample, k

    def __call__(self) -> np.ndarray:
        return _target_masks(self.sample, self.k)


def reasonseg_recipes(root: str | os.PathLike, split: str = "train", seed: int = 0) -> list[Recipe]:
    """ReasonSeg samples as recipes: up to 3 distinct texts per image, each its own conversation."""
    from ..dataset import load_split

    rng = np.random.default_rng(seed)
    recipes = []
    for sample in load_split(root, split):
        texts = list(dict.fromkeys(t for t in sample.texts if t.strip()))
        if not texts:
            continue
        chosen = [texts[i] for i in rng.permutation(len(texts))[:MAX_TEXTS_PER_IMAGE]]
        conversations = []
        for text in chosen:
            if sample.is_sentence:
                question = LONG_QUESTIONS[int(rng.integers(len(LONG_QUESTIONS)))].format(sent=text)
            else:
                question = SHORT_QUESTIONS[int(rng.integers(len(SHORT_QUESTIONS)))].format(class_name=text.lower())
            conversations.append(((question, ANSWERS[int(rng.integers(len(ANSWERS)))]),))
        recipes.append(Recipe(sample.id, sample.image_path, tuple(conversations),
                              mask_fn=_Masks(sample, len(conversations))))
    return recipes


# ---------------------------------------------------------------------------------------------- examples

def make_example(recipe: Recipe, tokenizer, processor, seg_id: int, n_image_tokens: int,
                 model_max_length: int = 512, use_im_start_end: bool = True, sam_size: int = 1024) -> Example:
    """Read the image, tokenize each conversation, decode the masks; truncate as the reference does (to
    model_max_length counting the image's expanded tokens), dropping the masks of any [SEG] cut off."""
    image = read_rgb(recipe.image_path)
    if recipe.mask_fn is not None:
        masks = recipe.mask_fn()
    elif recipe.masks:
        from ..masks import decode_rle

        masks = np.stack([decode_rle(rle).astype(np.uint8) for rle in recipe.masks])
    else:
        masks = np.zeros((0, image.shape[0], image.shape[1]), np.uint8)
    if masks.shape[1:] != image.shape[:2]:
        raise DatasetError(f"mask size {masks.shape[1]}x{masks.shape[2]} but the image is "
                           f"{image.shape[0]}x{image.shape[1]}", path=str(recipe.image_path), sample_id=recipe.id)
    sequences, keep = [], []
    cursor = 0
    for turns in recipe.conversations:
        text, spans = render(list(turns), use_im_start_end)
        tok = tokenize(tokenizer, text, spans)
        n_seg = tok.input_ids.count(seg_id)
        budget = model_max_length - (n_image_tokens - 1) * tok.input_ids.count(IMAGE_TOKEN_INDEX)
        tok = Tokenized(tok.input_ids[:budget], tok.labels[:budget])
        kept = tok.input_ids.count(seg_id)
        keep += list(range(cursor, cursor + kept))
        cursor += n_seg
        sequences.append(tok)
    if cursor != masks.shape[0]:
        raise DatasetError(f"{cursor} [SEG] tokens but {masks.shape[0]} masks", path=str(recipe.image_path),
                           sample_id=recipe.id)
    return Example(recipe.id, prepare_image(image, processor, sam_size), sequences, masks[keep])


def collate(examples: list[Example], pad_id: int) -> LisaBatch:
    seqs = [(i, s) for i, ex in enumerate(examples) for s in ex.sequences]
    width = max(len(s.input_ids) for _, s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for n, (_, s) in enumerate(seqs):
        ids[n, :len(s.input_ids)] = torch.tensor(s.input_ids)
        labels[n, :len(s.labels)] = torch.tensor(s.labels)
        attention[n, :len(s.input_ids)] = 1
    return LisaBatch(
        images_sam=torch.stack([ex.image.sam for ex in examples]),
        images_clip=torch.stack([ex.image.clip for ex in examples]),
        input_ids=ids, attention_mask=attention,
        image_index=torch.tensor([i for i, _ in seqs], dtype=torch.long),
        resize_sizes=[ex.image.resize_size for ex in examples],
        original_sizes=[ex.image.original_size for ex in examples],
        labels=labels, masks=[torch.from_numpy(ex.masks).float() for ex in examples],
        ids=[ex.id for ex in examples])
