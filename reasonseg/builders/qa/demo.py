"""The demo's QA step: synthetic sources in their real formats -> template QA set -> statistics."""
from __future__ import annotations

import shutil
from pathlib import Path

from ...sample.qa_sources import GOTCHA_ROOT, write_qa_sources
from .build import BuildOptions, build_qa
from .sources import open_sources
from .stats import write_stats

DEMO_SOURCES = ("ade20k", "cocostuff", "mapillary", "refer_seg", "llava_instruct", "reason_seg", "paco_lvis",
                "pascal_part")


def demo_step(out: Path, seed: int = 0, samples: int = 400) -> Path:
    """Write the synthetic sources under `out/qa-sources/` (a root holding `images`, `cocostuff` and `.jpg`, which
    string-rewriting loaders break on), build `out/qa/` in `lisa` mode with `samples` records, write its
    stats.json and class_frequency.png; return the QA folder. Rerunning rewrites the same bytes."""
    out = Path(out)
    sources_root = out / "qa-sources" / GOTCHA_ROOT
    if sources_root.exists():
        shutil.rmtree(sources_root)
    paths = write_qa_sources(sources_root, seed=seed)
    qa = out / "qa"
    build_qa(open_sources({name: paths[name] for name in DEMO_SOURCES}), qa,
             BuildOptions(mode="lisa", samples=samples, seed=seed))
    write_stats(qa)
    return qa
