"""Turning an item and the targets chosen from it into one QA record (the `qa.jsonl` line)."""
from __future__ import annotations

import numpy as np

from .items import Item, Source, Target
from .templates import (
    IMAGE_TOKEN,
    explanatory_question,
    long_question,
    part_phrase,
    seg_answer,
    short_question,
    with_image,
)

# Explanatory turns of ReasonSeg (docs/protocol.md §4): with probability `rate` the answer is the explanation alone and
# the record has no mask; otherwise, half the time, the question asks for an explanation too and the answer adds it.
TEXT_ONLY, PLAIN, WITH_EXPLANATION = 2, 0, 1


def question_for(target: Target, rng: np.random.Generator) -> tuple[str, str, str]:
    """(question without the image token, template id, the name asked) for one target."""
    if target.kind == "long":
        text, template = long_question(rng, target.name)
        return text, template, target.name
    name = part_phrase(rng, *target.obj_part) if target.obj_part else target.name
    text, template = short_question(rng, name)
    return text, template, name.lower()


def explanatory_choice(item: Item, rng: np.random.Generator, rate: float) -> int:
    if item.explanation is None or rate < 0:
        return PLAIN
    return TEXT_ONLY if rng.random() < rate else int(rng.integers(2))


def make_turns(source: Source, item: Item, targets: list[Target], rng: np.random.Generator,
               explanatory_rate: float = 0.1) -> tuple[dict, list]:
    """The record fields for these targets of the item (`conversations`: one human/gpt turn each; `targets`;
    `templates`) and the mask key of each [SEG], in order. Masks are left to the caller: the builder stores RLEs,
    training decodes arrays."""
    if item.conversation is not None:
        return {"conversations": item.conversation, "targets": [], "templates": []}, []
    choice = explanatory_choice(item, rng, explanatory_rate) if source.group == "reason_seg" else PLAIN
    turns, mask_keys, names, templates = [], [], [], []
    for target in targets:
        question, q_id, name = question_for(target, rng)
        answer, a_id = seg_answer(rng)
        if choice == WITH_EXPLANATION:
            extra, q_id = explanatory_question(rng)
            question, answer, a_id = f"{target.name} {extra}", f"{answer} {item.explanation}", f"{a_id}+outputs"
        elif choice == TEXT_ONLY:
            question, answer, q_id, a_id = target.name, item.explanation, "text", "outputs"
        turns += [{"from": "human", "value": with_image(question) if not turns else question},
                  {"from": "gpt", "value": answer}]
        if choice != TEXT_ONLY:
            mask_keys.append(target.mask_key)
        names.append(name)
        templates.append([q_id, a_id])
    return {"conversations": turns, "targets": names, "templates": templates}, mask_keys


def make_record(source: Source, item: Item, targets: list[Target], rng: np.random.Generator, record_id: str,
                explanatory_rate: float = 0.1) -> dict:
    """The `qa.jsonl` record for these targets of the item: one human/gpt turn each, one RLE mask per [SEG]."""
    return assemble(record_id, source, item, *make_turns(source, item, targets, rng, explanatory_rate))


def assemble(record_id: str, source: Source, item: Item, fields: dict, mask_keys: list) -> dict:
    """The `qa.jsonl` line: the turns' fields and the masks (0/1 RLE) of the mask keys, in the file's key order."""
    masks = [item.rle(k) for k in mask_keys]
    return {"id": record_id, "source": source.name, "image": item.image, "conversations": fields["conversations"],
            "masks": masks, "ignore": item.ignore_rle() if masks else None, "targets": fields["targets"],
            "templates": fields["templates"]}


def per_question(conversations: list[dict], templated: bool) -> list[list[dict]]:
    """A record's turns in the reference's layout: each templated question its own one-turn conversation opening
    with `<image>\n`; a free conversation (VQA, no templates) stays one multi-turn conversation."""
    if not templated:
        return [list(conversations)]
    out = []
    for human, gpt in zip(conversations[0::2], conversations[1::2], strict=False):
        value = human["value"] if IMAGE_TOKEN in human["value"] else with_image(human["value"])
        out.append([{**human, "value": value}, gpt])
    return out
