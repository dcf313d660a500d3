"""Training data: QA records (`qa.jsonl` of `reasonseg build qa`) and ReasonSeg train, tokenized with `llava_v1`.

An `Example` is one image with its token sequences and one target mask per `[SEG]`, in order. `collate` pads a list
of examples into a `LisaBatch` (used for training and for teacher-forced prediction alike).

QA records come from a set built by `reasonseg build qa` (`qa.jsonl` + `build.json`), read through
`reasonseg.builders.qa.QADataset`, the one reader every caller shares. A templated record (up to 3 targets, one turn
each) becomes one conversation per question, each opening with `<image>`, as the reference builds its samples; a VQA
record stays one multi-turn conversation. The record's `ignore` pixels are background in every target, as in the
reference (its loss counts them as 0). ReasonSeg train follows the reference: up to 3 distinct texts per image, each
its own conversation, all with the image's mask (`mask == 1`); long texts fill the long templates, short ones
(lower-cased) the short templates.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .config import IMAGE_TOKEN_INDEX
from .conversation import ANSWERS, IGNORE_INDEX, IMAGE, LONG_QUESTIONS, SHORT_QUESTIONS, Tokenized, render, tokenize
from .model import LisaBatch
from .preprocess import PreparedImage, prepare_image, read_rgb

MAX_TEXTS_PER_IMAGE = 3


@dataclass
class Example:
    id: str
    image: PreparedImage
    sequences: list[Tokenized]
    masks: np.ndarray             # k x H x W uint8, one per [SEG] across the sequences, in order


@dataclass(frozen=True, eq=False)
class Recipe:
    """What an example is made of, before images are read and texts tokenized."""

    id: str
    image_path: Path
    conversations: tuple[tuple[tuple[str, str], ...], ...]   # per sequence: (question, answer) turns
    masks: np.ndarray | None = None                           # k x H x W uint8 0/1, one per [SEG] (QA records)
    mask_fn: object = None                                    # or: a callable returning them (ReasonSeg, lazily)


# ---------------------------------------------------------------------------------------------- QA records

def _checked_turns(record, where: str) -> list[tuple[str, str]]:
    """The record's (question, answer) pairs, after checking the roles alternate human, gpt."""
    turns = record.conversations
    for k, turn in enumerate(turns):
        if turn.get("from") != ("human" if k % 2 == 0 else "gpt"):
            raise DatasetError("turns must alternate human, gpt", path=where, sample_id=record.id,
                               field=f"conversations[{k}]")
    pairs = [(str(q), str(a)) for q, a in record.turns]
    if not pairs:
        raise DatasetError("no human/gpt turn pair", path=where, sample_id=record.id, field="conversations")
    return pairs


def qa_recipe(record, where: str = "qa.jsonl") -> Recipe:
    """One QA record (`reasonseg.builders.qa.QARecord`, masks decoded) as a training recipe.

    A templated record (one template pair per turn: semantic, part, referring, reasoning) becomes one conversation
    per question, each opening with `<image>`, as the reference builds its samples (protocol.md §4: every class its
    own Q/A and mask); a free conversation (VQA: no templates) stays one multi-turn conversation. Pixels of the
    record's `ignore` mask are background in every target (the reference's `label == class` leaves them 0 and its
    loss counts them).
    """
    pairs = _checked_turns(record, where)
    if record.image_path is None:
        raise DatasetError(f"no image root for source {record.source!r}", path=where, sample_id=record.id,
                           field="source", hint="set data.qa_image_roots in the training config")
    if record.templates:
        conversations = tuple(((q if IMAGE in q else f"{IMAGE}\n{q}", a),) for q, a in pairs)
    else:
        conversations = (tuple(pairs),)
    masks = None
    if record.masks:
        masks = np.stack([np.asarray(m, np.uint8) for m in record.masks])
        if record.ignore is not None:
            if record.ignore.shape != masks.shape[1:]:
                raise DatasetError(f"ignore mask is {record.ignore.shape[0]}x{record.ignore.shape[1]} but the "
                                   f"masks are {masks.shape[1]}x{masks.shape[2]}", path=where, sample_id=record.id,
                                   field="ignore")
            masks = masks * (record.ignore == 0).astype(np.uint8)[None]
    return Recipe(record.id, Path(record.image_path), conversations, masks)


class QARecipes(Sequence):
    """The recipes of a built QA set, read on demand through `QADataset` (records are indexed by byte offset once,
    so a large set is never held in memory)."""

    def __init__(self, folder: str | os.PathLike, image_roots: dict[str, str | os.PathLike] | None = None):
        from ..builders.qa import QADataset

        self.dataset = QADataset(folder, image_roots=image_roots)
        if len(self.dataset) == 0:
            raise DatasetError("the QA set has no records", path=str(self.dataset.path))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Recipe:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return qa_recipe(self.dataset[index], f"{self.dataset.path} (record {index})")


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
    elif recipe.masks is not None:
        masks = recipe.masks
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
