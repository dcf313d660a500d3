"""Shared fixtures of the baselines tests: a small synthetic release and tiny random-initialised weights.

The weights are written once per test process with each library's own save function (`save_pretrained`,
`torch.save(state_dict)`) and read back by the methods through the same path a user's checkpoint takes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from reasonseg.baselines.weights import write_tiny_weights
from reasonseg.sample import write_sample_release

# Tiny models on a shared machine: one thread is 10-30x faster than torch's default when the cores are busy.
torch.set_num_threads(1)
_WEIGHTS: dict[str, Path] = {}
REPO = Path(__file__).resolve().parents[2]


def tiny_weights() -> dict[str, Path]:
    if not _WEIGHTS:
        _WEIGHTS.update(write_tiny_weights(Path(tempfile.mkdtemp(prefix="reasonseg-tiny-"))))
    return dict(_WEIGHTS)


def small_release(root: Path, counts: dict | None = None, size: tuple[int, int] | None = (64, 80)) -> Path:
    return write_sample_release(root, counts=counts or {"train": 2, "val": 4, "test": 4}, size=size)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line in a fresh process (so HF_HOME and HF_HUB_OFFLINE apply from the start)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "reasonseg.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=300)


def run_polygons(mask: np.ndarray) -> list[dict]:
    """A mask as one LabelMe shape per horizontal run: drawn back by `rasterize_shapes` it is exact, holes too."""
    shapes = []
    for y, row in enumerate(mask.astype(bool)):
        padded = np.concatenate([[False], row, [False]])
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        for x0, x1 in zip(edges[::2], edges[1::2], strict=True):
            shapes.append({"label": "target", "points": [[float(x0), float(y)], [float(x1 - 1), float(y)],
                                                         [float(x1 - 1), float(y)]]})
    return shapes


def rewrite_shapes(release: Path, split: str, sample_id: str, shapes: list[dict]) -> None:
    path = release / split / f"{sample_id}.json"
    data = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    data["shapes"] = shapes
    path.write_text(json.dumps(data), encoding="utf-8")
