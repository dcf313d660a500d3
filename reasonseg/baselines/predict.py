"""Run a registered method over a split and collect a predictions file."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import MethodError
from ..schema import Prediction, Sample
from ..submission import prediction_from_mask
from .registry import Method


def predict_samples(method: Method, samples: Iterable[Sample], protocol: str = "lisa",
                    progress: Callable[[int], None] | None = None) -> list[Prediction]:
    """One prediction per scored query (text 0 under `lisa`, every text under `all-texts`)."""
    predictions = []
    for sample in samples:
        for query in sample.queries(protocol):
            mask = method.predict(sample, query)
            if mask.shape != (sample.height, sample.width):
                raise MethodError(f"method returned a {mask.shape[0]}x{mask.shape[1]} mask for a "
                                  f"{sample.height}x{sample.width} image", sample_id=sample.id)
            predictions.append(prediction_from_mask(sample.id, query.text_index, mask))
        if progress:
            progress(1)
    return predictions
