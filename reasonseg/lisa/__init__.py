"""The LISA reference model: LLaVA + SAM with embedding-as-mask (docs/lisa.md).

Modules import torch, transformers and segment-anything; nothing here is imported by the scoring path.
Entry points: `checkpoint.load_lisa` / `init_release`, `infer.LisaPredictor`, `train.train` / `export_run`,
`demo.demo_step`.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"LisaPredictor": "reasonseg.lisa.infer", "ChatReply": "reasonseg.lisa.infer",
            "LisaTokenizer": "reasonseg.lisa.tokenizer", "ClipPreprocessor": "reasonseg.lisa.preprocess"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # lazy, so importing one submodule (or the CLI) does not import torch through infer
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reasonseg.lisa' has no attribute {name!r}")
