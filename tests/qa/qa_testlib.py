"""Shared helpers of the QA builder tests: synthetic sources under a root whose path holds the substrings that
the reference's path rewriting would corrupt (`images`, `cocostuff`, `.jpg`)."""
from __future__ import annotations

import json
from pathlib import Path

from reasonseg.builders.qa import BuildOptions, build_qa, open_sources
from reasonseg.sample.qa_sources import GOTCHA_ROOT


def gotcha_root(tmp_path: Path) -> Path:
    root = tmp_path / "images" / GOTCHA_ROOT
    assert all(s in str(root) for s in ("images", "cocostuff", ".jpg"))
    return root


def build(specs: dict, out: Path, images: dict | None = None, parquet: bool = False, **options):
    summary = build_qa(open_sources(specs, images), out, BuildOptions(**options), parquet=parquet)
    return summary, read_records(out)


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "qa.jsonl").read_text(encoding="utf-8").splitlines()]


def human_turns(record: dict) -> list[str]:
    return [t["value"] for t in record["conversations"] if t["from"] == "human"]
