"""Training data: fresh draws from the source datasets (the reference's way) or a fixed QA set, tokenized with
`llava_v1`.

An `Example` is one image with its token sequences and one target mask per `[SEG]`, in order. `collate` pads a list
of examples into a `LisaBatch` (used for training and for teacher-forced prediction alike).

`SampleStream` gives the recipe of global sample k of a run: draw k of `reasonseg.builders.qa.LisaSampler` (the
sources read by the QA builder's readers, sampled as the reference's `HybridDataset` samples them), or a record of a
set built by `reasonseg build qa` (read through `QADataset`, the one reader every caller shares), or a mix of the
two. Every templated question becomes its own conversation opening with `<image>`, as the reference builds its
samples; a VQA conversation stays one multi-turn conversation. A fixed record's `ignore` pixels are background in
every target, as in the reference (its loss counts them as 0).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .config import TRUNCATION_RESERVE
from .conversation import IGNORE_INDEX, Tokenized, render, tokenize
from .model import LisaBatch
from .preprocess import PreparedImage, prepare_image, read_rgb


@dataclass
class Example:
    id: str
    image: PreparedImage
    sequences: list[Tokenized]
    masks: np.ndarray             # k x H x W uint8, one per [SEG] kept across the sequences, in order
    dropped_masks: int = 0        # masks whose [SEG] the truncation cut off (counted in the training log)


@dataclass(frozen=True, eq=False)
class Recipe:
    """What an example is made of, before images are read and texts tokenized."""

    id: str
    image_path: Path
    conversations: tuple[tuple[tuple[str, str], ...], ...]   # per sequence: (question, answer) turns
    masks: np.ndarray | None = None                           # k x H x W uint8, one per [SEG]


# ---------------------------------------------------------------------------------------------- recipes

def _conversations(turns: list[dict], templated: bool) -> tuple:
    """(question, answer) pairs per conversation, in the reference's per-question layout."""
    from ..builders.qa.records import per_question

    return tuple(tuple((c[k]["value"], c[k + 1]["value"]) for k in range(0, len(c) - 1, 2))
                 for c in per_question(turns, templated))


def _checked_turns(turns: list[dict], record_id: str, where: str) -> list[dict]:
    """The turns, after checking the roles alternate human, gpt, and that there is a pair at least."""
    for k, turn in enumerate(turns):
        if turn.get("from") != ("human" if k % 2 == 0 else "gpt") or not isinstance(turn.get("value"), str):
            raise DatasetError("turns must alternate human, gpt (with string values)", path=where,
                               sample_id=record_id, field=f"conversations[{k}]")
    if len(turns) < 2:
        raise DatasetError("no human/gpt turn pair", path=where, sample_id=record_id, field="conversations")
    return turns


def qa_recipe(record, where: str = "qa.jsonl") -> Recipe:
    """One QA record (`reasonseg.builders.qa.QARecord`, masks decoded) as a training recipe (docs/protocol.md §4: every
    class its own Q/A and mask). Pixels of the record's `ignore` mask are background in every target (the
    reference's `label == class` leaves them 0 and its loss counts them)."""
    turns = _checked_turns(record.conversations, record.id, where)
    if record.image_path is None:
        raise DatasetError(f"no image root for source {record.source!r}", path=where, sample_id=record.id,
                           field="source", hint="set data.qa_image_roots in the training config")
    masks = None
    if record.masks:
        masks = np.stack([np.asarray(m, np.uint8) for m in record.masks])
        if record.ignore is not None:
            if record.ignore.shape != masks.shape[1:]:
                raise DatasetError(f"ignore mask is {record.ignore.shape[0]}x{record.ignore.shape[1]} but the "
                                   f"masks are {masks.shape[1]}x{masks.shape[2]}", path=where, sample_id=record.id,
                                   field="ignore")
            masks = masks * (record.ignore == 0).astype(np.uint8)[None]
    return Recipe(record.id, Path(record.image_path), _conversations(turns, bool(record.templates)), masks)


def draw_recipe(draw) -> Recipe:
    """A sampler draw (`reasonseg.builders.qa.Draw`) as a training recipe; its masks are the reference's targets
    (a refer mask whose polygon parts overlap keeps its 2s unless the run clips them)."""
    turns = _checked_turns(draw.fields["conversations"], draw.id, str(draw.source.root))
    masks = draw.masks()
    return Recipe(draw.id, draw.source.image_root / draw.item.image,
                  _conversations(turns, bool(draw.fields["templates"])), masks if len(masks) else None)


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


class SampleStream:
    """The recipe of global sample k of a run, a pure function of (seed, k): so every rank reads its own indices of
    one stream and a resumed run continues it. With both a sampler and a fixed QA set, sample k is a fresh draw
    with probability `draw_rate` (the rest: a uniformly chosen QA record)."""

    def __init__(self, sampler=None, qa: QARecipes | None = None, draw_rate: float = 1.0, seed: int = 0):
        if sampler is None and qa is None:
            raise DatasetError("the training data is empty: give sources or a QA set")
        self.sampler, self.qa, self.seed = sampler, qa, seed
        self.draw_rate = 1.0 if qa is None else (0.0 if sampler is None else draw_rate)

    def recipe(self, index: int) -> Recipe:
        from ..builders.qa.sampler import seeded_rng

        if self.qa is None:
            return draw_recipe(self.sampler.draw(index))
        rng = seeded_rng(self.seed, "mix", index)
        if rng.random() < self.draw_rate:
            return draw_recipe(self.sampler.draw(index))
        return self.qa[int(rng.integers(len(self.qa)))]


# ---------------------------------------------------------------------------------------------- examples

def make_example(recipe: Recipe, tokenizer, processor, seg_id: int, model_max_length: int = 512,
                 use_im_start_end: bool = True, sam_size: int = 1024) -> Example:
    """Read the image, tokenize each conversation, decode the masks; truncate as the reference does (every sequence
    to `model_max_length - TRUNCATION_RESERVE` ids), dropping the masks of any [SEG] cut off and counting them in
    `Example.dropped_masks`."""
    image = read_rgb(recipe.image_path)
    if recipe.masks is not None:
        masks = recipe.masks
    else:
        masks = np.zeros((0, image.shape[0], image.shape[1]), np.uint8)
    if masks.shape[1:] != image.shape[:2]:
        raise DatasetError(f"mask size {masks.shape[1]}x{masks.shape[2]} but the image is "
                           f"{image.shape[0]}x{image.shape[1]}", path=str(recipe.image_path), sample_id=recipe.id)
    sequences, keep = [], []
    cursor = 0
    budget = model_max_length - TRUNCATION_RESERVE
    for turns in recipe.conversations:
        text, _ = render(list(turns), use_im_start_end)
        tok = tokenize(tokenizer, text, with_labels=True)
        n_seg = tok.input_ids.count(seg_id)
        tok = Tokenized(tok.input_ids[:budget], tok.labels[:budget])
        kept = tok.input_ids.count(seg_id)
        keep += list(range(cursor, cursor + kept))
        cursor += n_seg
        sequences.append(tok)
    if cursor != masks.shape[0]:
        raise DatasetError(f"{cursor} [SEG] tokens but {masks.shape[0]} masks", path=str(recipe.image_path),
                           sample_id=recipe.id)
    return Example(recipe.id, prepare_image(image, processor, sam_size), sequences, masks[keep],
                   dropped_masks=cursor - len(keep))


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
