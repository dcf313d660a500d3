"""reasonseg: the toolkit for the ReasonSeg reasoning-segmentation benchmark.

The public API is re-exported here lazily, so `import reasonseg` stays cheap for the CLI.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_split": "reasonseg.sources",
    "validate_release": "reasonseg.sources",
    "write_manifest": "reasonseg.dataset",
    "read_manifest": "reasonseg.dataset",
    "rasterize_shapes": "reasonseg.masks",
    "encode_rle": "reasonseg.masks",
    "decode_rle": "reasonseg.masks",
    "mask_to_polygons": "reasonseg.masks",
    "read_predictions": "reasonseg.submission",
    "write_predictions": "reasonseg.submission",
    "load_ground_truth": "reasonseg.metrics.groundtruth",
    "evaluate": "reasonseg.metrics.scoring",
    "evaluate_predictions": "reasonseg.metrics.scoring",
    "evaluate_drift": "reasonseg.metrics.drift",
    "Rules": "reasonseg.metrics.rules",
    "read_results": "reasonseg.metrics.report",
    "write_results": "reasonseg.metrics.report",
    "paired_comparison": "reasonseg.metrics.stats",
    "image_sums": "reasonseg.metrics.stats",
    "bootstrap_ci": "reasonseg.metrics.stats",
    "ReasonSegMetric": "reasonseg.metrics.metric",
    "score_masks": "reasonseg.metrics.metric",
    "prediction_from_mask": "reasonseg.submission",
    "prediction_set": "reasonseg.metrics.scoring",
    "Evaluation": "reasonseg.metrics.scoring",
    "GroundTruth": "reasonseg.metrics.groundtruth",
    "binary_mask": "reasonseg.masks",
    "Sample": "reasonseg.schema",
    "Shape": "reasonseg.schema",
    "Query": "reasonseg.schema",
    "Prediction": "reasonseg.schema",
    "ReasonSegError": "reasonseg.errors",
    "LisaPredictor": "reasonseg.lisa.infer",
}

__all__ = ["__version__", *_EXPORTS]


# Exports whose module needs an extra: without it, importing them is one line naming the pip command.
_NEEDS_EXTRA = {"LisaPredictor": "model"}


def __getattr__(name: str):
    if name in _EXPORTS:
        if name in _NEEDS_EXTRA:
            from .extras import require_extra

            require_extra(_NEEDS_EXTRA[name], f"reasonseg.{name}")
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reasonseg' has no attribute {name!r}")
