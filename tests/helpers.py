"""Small fixture writers shared by tests: a release in the public layout, predictions from masks."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_release(root: Path, split: str, samples: dict[str, dict], sizes: dict[str, tuple[int, int]]) -> Path:
    """samples: id -> annotation JSON object; sizes: id -> (height, width) of the blank JPEG written."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for sid, ann in samples.items():
        h, w = sizes[sid]
        cv2.imwrite(str(folder / f"{sid}.jpg"), np.full((h, w, 3), 127, np.uint8))
        (folder / f"{sid}.json").write_text(json.dumps(ann), encoding="utf-8")
    return root


def random_annotation(rng: np.random.Generator, h: int, w: int, n_texts: int = 1) -> dict:
    shapes = []
    for _ in range(int(rng.integers(0, 5))):
        label = str(rng.choice(["target", "target", "ignore", "flag", "Target_2"]))
        n = int(rng.integers(3, 8))
        pts = np.stack([rng.uniform(-10, w + 10, n), rng.uniform(-10, h + 10, n)], 1)
        shapes.append({"label": label, "points": pts.round(2).tolist()})
    return {"text": [f"query {k}" for k in range(n_texts)], "is_sentence": bool(rng.integers(0, 2)),
            "shapes": shapes}


def assert_one_line_error(proc, *parts: str) -> str:
    """A user error as the CLI must give it: exit code 2 and one line on stderr (no traceback) naming `parts`;
    returns that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]
