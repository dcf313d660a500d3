"""Two lmms-eval models that answer the reasonseg tasks in the SA-Co convention (imported by lmms-eval only).

`reasonseg_replay` answers each query from a reasonseg predictions file (`--model_args predictions=preds.json`):
the harness then prints what `reasonseg score` prints for that file. `reasonseg_lisa` runs the LISA reference
model (`--model_args weights=DIR,precision=fp32,device=cpu`) as `reasonseg predict --method lisa` does: LISA's
validation prompt with the answer `[SEG].` teacher-forced, one mask per query.
"""
from __future__ import annotations

from lmms_eval.api.model import lmms

from ...errors import MethodError
from ...masks import encode_rle, intervals_to_mask
from ...schema import canonical_split
from ...submission import read_predictions
from .answers import write_answer


class ReasonSegModel(lmms):
    """What both models share: the query each request stands for, and no likelihoods."""

    is_simple = True

    def query_doc(self, request) -> dict:
        """The reasonseg document a request was made from (lmms-eval keeps the processed docs per task)."""
        doc_id, task, split = request.args[3], request.args[4], request.args[5]
        doc = self.task_dict[task][split][doc_id]
        if not {"id", "text_index", "image", "text", "is_sentence"} <= set(doc):
            raise MethodError(f"{type(self).__name__} answers the reasonseg tasks only, not {task!r}",
                              hint="run it with --tasks reasonseg_val or reasonseg_test (--include_path TASKS_DIR)")
        return doc

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{type(self).__name__} only generates answers (generate_until)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{type(self).__name__} answers in one round")


class ReplayModel(ReasonSegModel):
    """Answers each query with its mask from a predictions file (JSON, PNG folder or zip); an empty answer where
    the file has none, so the task scores it as an empty mask."""

    def __init__(self, predictions: str, **kwargs) -> None:   # lmms-eval also passes batch_size, device, ...
        super().__init__()
        self.predictions = read_predictions(predictions)

    def answer(self, doc: dict) -> str:
        named = self.predictions.split
        if named and canonical_split(named) != doc["split"]:
            raise MethodError(f"the predictions are for split {named!r} but the task scores {doc['split']!r}",
                              path=self.predictions.path, hint=f"run the reasonseg_{named} task")
        mask = self.predictions.masks.get((doc["id"], doc["text_index"]))
        if mask is None:
            return write_answer([])
        return write_answer([encode_rle(intervals_to_mask(mask.intervals, mask.height, mask.width))])

    def generate_until(self, requests) -> list[str]:
        return [self.answer(self.query_doc(request)) for request in requests]


class LisaModel(ReasonSegModel):
    """The LISA reference model; `batch_size` queries go through one teacher-forced forward pass."""

    def __init__(self, weights: str, precision: str | None = None, device: str | None = None,
                 batch_size: int | str = 1, **kwargs) -> None:
        super().__init__()
        from ...lisa.infer import LisaPredictor

        self.predictor = LisaPredictor.from_pretrained(weights, device=device, precision=precision)
        self.batch_size = max(int(batch_size), 1)

    def generate_until(self, requests) -> list[str]:
        docs = [self.query_doc(request) for request in requests]
        answers = []
        for start in range(0, len(docs), self.batch_size):
            chunk = docs[start:start + self.batch_size]
            masks = self.predictor.segment([(doc["image"], doc["text"], doc["is_sentence"]) for doc in chunk])
            answers.extend(write_answer([encode_rle(mask)]) for mask in masks)
        return answers
