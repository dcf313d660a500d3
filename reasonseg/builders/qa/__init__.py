"""The template QA training set: (question, "[SEG]" answer, mask) conversations generated from semantic, part and
referring segmentation datasets, VQA and ReasonSeg train, with the reference's templates and label rules.

`build_qa(open_sources({...}), out, BuildOptions(...))` writes `qa.jsonl` + `build.json`; `QADataset(out)` reads
it back with decoded masks (no torch import); `qa_stats(out)` summarises it.
"""
from __future__ import annotations

from .build import BuildOptions, BuildSummary, build_qa
from .items import QASourceError
from .reader import QADataset, QARecord
from .sources import READERS, open_sources
from .stats import qa_stats

__all__ = ["READERS", "BuildOptions", "BuildSummary", "QADataset", "QARecord", "QASourceError", "build_qa",
           "open_sources", "qa_stats"]
