"""Answers in the SA-Co convention (what lmms-eval's mask tasks and its sam3 model exchange), read by our checked
decoder: several masks OR-ed, anything unreadable or of the wrong size scored as empty and named."""
import json

import numpy as np
import pytest
from pycocotools import mask as cocomask

from reasonseg.integrations.lmms_eval.answers import UNPARSEABLE, WRONG_SIZE, read_answer, write_answer
from reasonseg.masks import decode_rle

H, W = 7, 5


def coco_rle(mask: np.ndarray) -> dict:
    """As lmms-eval's sam3 adapter writes a mask: pycocotools' RLE with the counts decoded to str."""
    rle = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def blob(y0, y1, x0, x1, shape=(H, W)):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_sam3_style_answer_with_two_masks_is_their_union():
    a, b = blob(0, 3, 0, 2), blob(2, 6, 1, 5)
    text = json.dumps({"masks": [coco_rle(a), coco_rle(b)], "boxes": [[0, 0, 1, 1]] * 2, "scores": [0.9, 0.4]})
    answer = read_answer(text, H, W)
    assert answer.problem is None
    assert np.array_equal(decode_rle(answer.rle).astype(bool), a | b)


def test_bare_list_uncompressed_counts_and_no_masks():
    a = blob(1, 4, 1, 4)
    uncompressed = {"size": [H, W], "counts": [int(v) for v in np.diff(np.r_[0, np.flatnonzero(
        np.diff(a.T.reshape(-1).astype(int))) + 1, a.size])]}
    answer = read_answer(json.dumps([uncompressed]), H, W)
    assert answer.problem is None and np.array_equal(decode_rle(answer.rle).astype(bool), a)
    empty = read_answer(write_answer([]), H, W)
    assert empty.problem is None and not decode_rle(empty.rle).any()


@pytest.mark.parametrize("text", [
    "the mask is at the top left",                                     # prose
    '{"masks": [{"size": [7, 5], "counts": "0' + "\u00e9" + '"}]}',   # counts outside the RLE alphabet
    json.dumps({"masks": [{"size": [7, 5], "counts": [3, 4]}]}),       # runs that do not cover the image
    json.dumps({"boxes": [[0, 0, 1, 1]]}),                             # no mask list
    json.dumps({"masks": {"size": [7, 5]}}),
    json.dumps([["not", "an", "rle"]]),
    "",
])
def test_unreadable_answers_score_empty_and_are_named(text):
    answer = read_answer(text, H, W)
    assert answer.problem == UNPARSEABLE
    assert decode_rle(answer.rle).shape == (H, W) and not decode_rle(answer.rle).any()


def test_a_mask_of_another_size_makes_the_answer_wrong_size():
    good, transposed = blob(0, 2, 0, 2), blob(0, 2, 0, 2, shape=(W, H))
    answer = read_answer(write_answer([coco_rle(good), coco_rle(transposed)]), H, W)
    assert answer.problem == WRONG_SIZE and not decode_rle(answer.rle).any()
