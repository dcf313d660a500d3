"""The template QA training set: (question, "[SEG]" answer, mask) conversations generated from semantic, part and
referring segmentation datasets, VQA and ReasonSeg train, with the reference's templates and label rules.

`build_qa(open_sources({...}), out, BuildOptions(...))` writes `qa.jsonl` + `build.json`; `QADataset(out)` reads
it back with decoded masks (no torch import); `qa_stats(out)` summarises it. `LisaSampler(sources, ...)` draws
samples the reference's way, for `build qa --mode lisa` and for training alike.
"""
from __future__ import annotations

from .build import BuildOptions, BuildSummary, build_qa
from .items import QASourceError
from .reader import QADataset, QARecord
from .sampler import Draw, LisaSampler, SamplerOptions
from .sources import READERS, open_sources
from .stats import qa_stats

__all__ = ["READERS", "BuildOptions", "BuildSummary", "Draw", "LisaSampler", "QADataset", "QARecord", "QASourceError",
           "SamplerOptions", "build_qa", "open_sources", "qa_stats"]
