"""A model's answer in the SA-Co convention of lmms-eval's mask tasks, read and written.

The answer is a JSON string: `{"masks": [rle, ...]}` (other keys, such as SA-Co's boxes and scores, are ignored)
or a bare list of masks, each a COCO RLE `{"size": [height, width], "counts": ...}`. The masks of one answer are
OR-ed into the query's mask. An answer that cannot be read (not JSON, no mask list, an RLE our checked decoder
refuses) or that holds a mask of another size than the image is scored as an empty mask and counted, never
dropped. Pure functions: no lmms-eval import.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ...errors import MaskError
from ...masks import decode_rle, encode_rle

UNPARSEABLE = "unparseable"
WRONG_SIZE = "wrong_size"
PROBLEMS = (UNPARSEABLE, WRONG_SIZE)


@dataclass(frozen=True)
class Answer:
    rle: dict                 # the query's mask (COCO RLE, counts a str): empty when the answer has a problem
    problem: str | None       # None, UNPARSEABLE or WRONG_SIZE


def mask_list(text: str) -> list | None:
    """The answer's list of masks as JSON values; None when the text is not an answer in the convention."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None
    masks = data.get("masks") if isinstance(data, dict) else data
    return masks if isinstance(masks, list) else None


def read_answer(text: str, height: int, width: int) -> Answer:
    """The query's mask from a model's answer for an image of `height` x `width` pixels."""
    masks, problem = decoded_masks(text, height, width)
    union = np.zeros((height, width), bool)
    for mask in masks:
        union |= mask.astype(bool)
    return Answer(encode_rle(union), problem)


def decoded_masks(text: str, height: int, width: int) -> tuple[list[np.ndarray], str | None]:
    """The answer's masks, checked; none, with the problem, when one cannot be read or is of another size."""
    rles = mask_list(text)
    if rles is None:
        return [], UNPARSEABLE
    try:
        masks = [decode_rle(rle) for rle in rles]
    except MaskError:
        return [], UNPARSEABLE
    if any(mask.shape != (height, width) for mask in masks):
        return [], WRONG_SIZE
    return masks, None


def write_answer(rles: list[dict]) -> str:
    """The answer text holding these masks (what the models here reply)."""
    return json.dumps({"masks": rles})
