"""ReasonSeg in lmms-eval: tasks scored by our exact metric, and models that answer them.

`TASKS_DIR` is the folder to pass as lmms-eval's `--include_path`; it holds the tasks `reasonseg_val` and
`reasonseg_test` (and `*_plain`, prompted with the query text alone). The models `reasonseg_replay` and
`reasonseg_lisa` are registered through the `lmms_eval.models` entry point (`registration.manifests`).
Nothing here imports lmms_eval; `models.py` does, and only lmms-eval imports it.
"""
from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"

__all__ = ["TASKS_DIR"]
