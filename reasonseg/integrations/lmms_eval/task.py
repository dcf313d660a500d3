"""The functions lmms-eval calls for the tasks in `TASKS_DIR` (named by `!function` in their YAML).

Documents are a split's scored queries, read by our own readers from the data `REASONSEG_DATA` names (a release
folder, its published form or a Hub dataset id in the local cache). Each answer is read in the SA-Co convention
(`answers.py`), and every metric of a task is taken from one results document of our scorer over all its answers:
the numbers are those of `reasonseg score` on the same masks, to the last bit. lmms-eval's own group aggregation
is a size-weighted mean (wrong for cIoU), so short and long are metrics of the one task, not subtasks.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

from ...errors import DatasetError, SubmissionError
from ...metrics.groundtruth import GroundTruth, load_ground_truth
from ...metrics.rules import Rules, resolve_rules, wanted_keys
from ...metrics.scoring import evaluate_predictions
from ...schema import Prediction
from .answers import UNPARSEABLE, WRONG_SIZE, read_answer

DATA_VARIABLE = "REASONSEG_DATA"            # the release the tasks read (lmms-eval has no --task_args)
RULES_VARIABLE = "REASONSEG_RULES"          # the scoring rules (`reasonseg score --rules`), lisa by default
PROTOCOL_VARIABLE = "REASONSEG_PROTOCOL"    # `--protocol`: lisa (text 0 of each image) or all-texts
METRICS = ("giou", "ciou", "giou_short", "ciou_short", "giou_long", "ciou_long", UNPARSEABLE, WRONG_SIZE)
PROMPTS = ("lisa", "plain")


def scoring_rules(gt: GroundTruth) -> Rules:
    return resolve_rules(os.environ.get(RULES_VARIABLE) or None, protocol=os.environ.get(PROTOCOL_VARIABLE) or None,
                         gt=gt)


def data_source() -> str:
    data = os.environ.get(DATA_VARIABLE)
    if not data:
        raise DatasetError(f"the reasonseg tasks read the release named by {DATA_VARIABLE}, which is not set",
                           hint=f"export {DATA_VARIABLE}=ReasonSeg/ (a release folder, its published folder, or a "
                                "Hub dataset id in the local cache)")
    return data


@functools.lru_cache(maxsize=4)
def ground_truth(data: str, split: str) -> GroundTruth:
    return load_ground_truth(data, split)


# ------------------------------------------------------------------------------------------------ documents

def split_docs(split: str):
    """The queries the scoring rules ask for, as a `datasets.Dataset`, one row per query, in the split's order."""
    import datasets

    gt = ground_truth(data_source(), split)
    rows = []
    for sid, k in wanted_keys(scoring_rules(gt), gt):
        mask = gt.masks[sid]
        rows.append({"split": gt.split, "id": sid, "text_index": k, "text": mask.texts[k] if mask.texts else "",
                     "is_sentence": mask.is_sentence, "image": str(gt.root / mask.image),
                     "height": mask.height, "width": mask.width})
    return datasets.Dataset.from_list(rows)


def val_docs(placeholder):
    """process_docs of reasonseg_val: the placeholder rows lmms-eval loaded are replaced by the split's queries."""
    return split_docs("val")


def test_docs(placeholder):
    return split_docs("test")


def doc_to_visual(doc) -> list:
    """The image as the ground truth sees it (EXIF orientation applied, as cv2.imread does), in RGB."""
    from PIL import Image, ImageOps

    with Image.open(doc["image"]) as image:
        return [ImageOps.exif_transpose(image).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None) -> str:
    """LISA's validation prompt for the query (without its `<image>` placeholder: the model places the image), or
    with `prompt: plain` the query text itself."""
    from ...lisa.conversation import IMAGE, validation_question

    prompt = (lmms_eval_specific_kwargs or {}).get("prompt", "lisa")
    if prompt not in PROMPTS:
        raise DatasetError(f"unknown prompt {prompt!r} in lmms_eval_specific_kwargs; choose one of "
                           f"{', '.join(PROMPTS)}")
    if prompt == "plain":
        return doc["text"].strip()
    return validation_question(doc["text"], doc["is_sentence"]).removeprefix(IMAGE + "\n").strip()


# ------------------------------------------------------------------------------------------------ scoring

def process_results(doc, results) -> dict:
    """The query's answer as the one item every metric aggregates: its mask as RLE (empty when the answer has a
    problem) and the problem."""
    answer = read_answer(results[0] if results else "", doc["height"], doc["width"])
    item = {"split": doc["split"], "id": doc["id"], "text_index": doc["text_index"], "mask": answer.rle,
            "problem": answer.problem}
    return {name: item for name in METRICS}


def unique_items(items: list[dict]) -> list[dict]:
    """One item per query (a query answered twice, e.g. by padded ranks, must be answered the same)."""
    seen: dict[tuple[str, int], dict] = {}
    for item in items:
        key = (item["id"], item["text_index"])
        if seen.setdefault(key, item) != item:
            raise SubmissionError(f"text_index {key[1]} was answered twice with different masks", sample_id=key[0])
    return list(seen.values())


def answered_ground_truth(gt: GroundTruth, items: list[dict]) -> GroundTruth:
    """The split's ground truth, narrowed to the answered images when lmms-eval ran a part of it (--limit)."""
    answered = {item["id"] for item in items}
    if answered >= set(gt.masks):
        return gt
    return dataclasses.replace(gt, masks={sid: m for sid, m in gt.masks.items() if sid in answered})


@functools.lru_cache(maxsize=2)
def _document(items_json: str) -> dict:
    items = json.loads(items_json)
    splits = {item["split"] for item in items}
    if len(splits) != 1:
        raise SubmissionError(f"one task scores one split; the answers are of {sorted(splits)}")
    gt = answered_ground_truth(ground_truth(data_source(), splits.pop()), items)
    predictions = [Prediction(item["id"], item["text_index"], item["mask"]) for item in items]
    evaluation = evaluate_predictions(gt, predictions, rules=scoring_rules(gt), bootstrap=0)
    _log_problems(items)
    return evaluation.document


def results_document(items: list[dict]) -> dict:
    """Our scorer's results document over a task's answers (computed once for all its metrics)."""
    return _document(json.dumps(unique_items(items), sort_keys=True))


def _log_problems(items: list[dict]) -> None:
    from loguru import logger

    for problem in (UNPARSEABLE, WRONG_SIZE):
        ids = [item["id"] for item in items if item["problem"] == problem]
        if ids:
            logger.warning(f"reasonseg: {len(ids)} of {len(items)} answers are {problem.replace('_', ' ')} and "
                           f"scored as empty masks (e.g. {', '.join(ids[:5])}); see the {problem} metric")


def _group_metric(group: str, metric: str):
    def aggregate(items: list[dict]) -> float:
        row = results_document(items)["groups"].get(group)   # no short / long where queries have no kind
        return row[metric] if row else float("nan")

    aggregate.__name__ = f"{metric}_{group}"
    return aggregate


giou = _group_metric("overall", "giou")
ciou = _group_metric("overall", "ciou")
giou_short = _group_metric("short", "giou")
ciou_short = _group_metric("short", "ciou")
giou_long = _group_metric("long", "giou")
ciou_long = _group_metric("long", "ciou")


def unparseable(items: list[dict]) -> int:
    return sum(item["problem"] == UNPARSEABLE for item in unique_items(items))


def wrong_size(items: list[dict]) -> int:
    return sum(item["problem"] == WRONG_SIZE for item in unique_items(items))
