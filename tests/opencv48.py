"""Real OpenCV 4.8 (the version LISA's environment pins) as the tests' reference for drawing one LISA polygon.

LISA draws a polygon with `cv2.polylines(mask, [pts], True, value, 1)` then `cv2.fillPoly(mask, [pts], value)` on
int32 points. OpenCV 4.8 needs numpy < 2, so it lives in a scratch environment of its own (`make .venv-cv48`:
`numpy<2`, `opencv-python-headless==4.8.0.74`); this file is both its program and the tests' client:

  python tests/opencv48.py serve                  draw requests from stdin, masks to stdout (what `OpenCV48` runs)
  python tests/opencv48.py corpus OUT.npz SEED... write the stored corpus (tests/fixtures/opencv48/corpus.npz)
  python tests/opencv48.py regressions OUT.npz    write REGRESSIONS (tests/fixtures/opencv48/regressions.npz)

Only numpy is imported at the top: `random_polygon` generates the same cases in both environments.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
KINDS = ("random", "star", "tiny", "degenerate", "far", "huge", "outside", "many", "straddle")
_HEADER = struct.Struct("<3q")

# Polygons on which reasonseg once drew another mask than OpenCV 4.8: (kind, seed, height, width, points); seed -1
# for a case found by a wider search than random_polygon. All three: edges spanning 2**31 rows or more, whose
# far-end x OpenCV computes with a wrapped int row count, so that it sees every edge off the image and fills
# nothing. Stored with OpenCV 4.8's masks in fixtures/opencv48/regressions.npz (`python tests/opencv48.py
# regressions OUT.npz`).
REGRESSIONS = (
    ("huge", 597035347150377, 39, 72, ((-4, -10), (INT32_MAX - 1, INT32_MAX), (-6, -8))),
    ("straddle", -1, 79, 37, ((2147483620, 2147483614), (-18, -32786), (-2147483602, -39))),
    ("straddle", -1, 13, 17, ((-2147483609, 2147483641), (33, -52781), (1830027516, -26))),
)


def scratch_python() -> Path | None:
    """The OpenCV 4.8 environment's interpreter: $REASONSEG_OPENCV48_PYTHON, else the repository's .venv-cv48."""
    env = os.environ.get("REASONSEG_OPENCV48_PYTHON")
    path = Path(env) if env else ROOT / ".venv-cv48" / "bin" / "python"
    return path if path.exists() else None


# ------------------------------------------------------------------------------------------ the cases drawn

def random_polygon(rng: np.random.Generator, kind: str, far_above: bool = False) -> tuple[int, int, np.ndarray]:
    """(height, width, n x 2 int32 points) of one case of a kind (KINDS). Self-intersections come for free: the
    vertices of most kinds are placed in random order. `far_above` lets "huge" put vertices up to 2**31 rows above
    the image, which OpenCV's fill walks row by row (about 15 s a polygon)."""
    height, width = int(rng.integers(1, 97)), int(rng.integers(1, 97))
    size = np.array([width, height])
    if kind == "random":        # a few vertices anywhere in and around the image, in any order
        pts = rng.uniform(-0.3, 1.3, (int(rng.integers(3, 13)), 2)) * size
    elif kind == "star":        # a star-shaped blob (simple), possibly reaching out of the image
        n = int(rng.integers(3, 60))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.05, 0.8) * size.max() * rng.uniform(0.5, 1.0, n)
        centre = rng.uniform(-0.1, 1.1, 2) * size
        pts = centre + radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1)
    elif kind == "tiny":        # 1-3 px across, anywhere (corners and borders included)
        corner = rng.integers(-2, size + 1)
        pts = corner + rng.integers(0, 4, (int(rng.integers(1, 7)), 2))
    elif kind == "degenerate":  # collinear points (repeats included), one or two points, axis-parallel slivers
        start = rng.integers(-5, size + 5)
        step = rng.integers(-6, 7, 2) * int(rng.choice([0, 1], p=[0.15, 0.85]))
        pts = start + rng.integers(-4, 12, (int(rng.integers(1, 8)), 1)) * step
        if rng.random() < 0.3:                                     # a sliver one pixel off the line
            pts = np.concatenate([pts, pts[-1:] + rng.integers(-1, 2, (1, 2))])
    elif kind == "far":         # some vertices far out (to 1e6; far above only to 1e5: OpenCV walks those rows)
        pts = rng.uniform(-0.3, 1.3, (int(rng.integers(3, 9)), 2)) * size
        out = rng.random(len(pts)) < 0.5
        pts[out] = rng.uniform(-1e6, 1e6, (int(out.sum()), 2))
        pts[:, 1] = np.maximum(pts[:, 1], -1e5)
    elif kind == "huge":        # int32 extremes
        pts = rng.uniform(-0.3, 1.3, (int(rng.integers(3, 8)), 2)) * size
        out = rng.random(len(pts)) < 0.6
        pts[out] = rng.choice([INT32_MIN, INT32_MIN + 1, -10**9, 10**9, INT32_MAX - 1, INT32_MAX], (int(out.sum()), 2))
        if not far_above:
            pts[:, 1] = np.maximum(pts[:, 1], -1e5)
    elif kind == "outside":     # wholly off one side or beyond a corner
        side = rng.integers(0, 2, 2) * 2 - 1
        pts = rng.uniform(0, 1, (int(rng.integers(3, 8)), 2)) * size * 2 + np.where(side > 0, size, -2 * size)
        if rng.random() < 0.5:                                    # off one side only: the other axis overlaps
            axis = int(rng.integers(0, 2))
            pts[:, axis] = rng.uniform(-0.2, 1.2, len(pts)) * size[axis]
    elif kind == "many":        # 100 to 1000 vertices: a random walk, or a wobbly ring
        n = int(rng.integers(100, 1000))
        if rng.random() < 0.5:
            pts = np.cumsum(rng.normal(0, 3, (n, 2)), axis=0) + rng.uniform(0, 1, 2) * size
        else:
            theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
            radius = size.max() * (0.4 + 0.1 * np.sin(rng.integers(3, 40) * theta)) + rng.normal(0, 1, n)
            pts = size / 2 + radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1)
    elif kind == "straddle":    # edges from just above the image to just below INT32_MAX: 2**31 rows or more
        n = int(rng.integers(3, 7))
        above = -rng.integers(0, 41, n) * np.where(rng.random(n) < 0.5, 2500, 1)
        below = INT32_MAX - rng.integers(0, 41, n) * np.where(rng.random(n) < 0.5, 2500, 1)
        rows = np.select([rng.random(n) < 0.35, rng.random(n) < 0.55], [above, below], rng.integers(-2, height + 2, n))
        cols = rng.integers(-width, 2 * width + 1, n).astype(np.float64)
        extreme = rng.random(n)
        cols = np.where(extreme < 0.2, rng.uniform(INT32_MIN, INT32_MAX, n), cols)
        cols = np.where(extreme > 0.7, rng.choice([INT32_MIN, INT32_MAX], n) - rng.integers(-40, 41, n), cols)
        pts = np.stack([cols, rows], 1)
    else:
        raise ValueError(kind)
    return height, width, np.clip(np.asarray(pts, np.float64), INT32_MIN, INT32_MAX).astype(np.int32)


# ---------------------------------------------------------------------------- the scratch environment's side

def _draw(cv2, height: int, width: int, pts: np.ndarray) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.polylines(canvas, [pts], True, 1, 1)
    cv2.fillPoly(canvas, [pts], 1)
    return canvas


def _serve() -> None:
    import cv2

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while header := stdin.read(_HEADER.size):
        height, width, n = _HEADER.unpack(header)
        pts = np.frombuffer(stdin.read(8 * n), np.int32).reshape(n, 2)
        stdout.write(_draw(cv2, height, width, pts).tobytes())
        stdout.flush()


def _corpus(out: str, seeds: list[int], per_kind: int = 100, far_above: int = 2) -> None:
    """per_kind cases of every kind for each seed, and far_above more "huge" ones reaching 2**31 rows above the
    image."""
    cases = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        plan = [(kind, False) for kind in KINDS for _ in range(per_kind)] + [("huge", True)] * far_above
        cases += [(kind, seed, *random_polygon(rng, kind, far_above=far)) for kind, far in plan]
    _store(out, cases)


def _store(out: str, cases: list[tuple[str, int, int, int, np.ndarray]]) -> None:
    """(kind, seed, height, width, points) cases with OpenCV 4.8's masks (bits packed), as `load_corpus` reads."""
    import cv2

    masks = [np.packbits(_draw(cv2, height, width, pts).reshape(-1)) for _, _, height, width, pts in cases]
    np.savez_compressed(out, opencv=np.array(cv2.__version__),
                        sizes=np.array([(c[2], c[3]) for c in cases], np.int64).reshape(-1, 2),
                        counts=np.array([len(c[4]) for c in cases], np.int64),
                        points=np.concatenate([np.asarray(c[4], np.int32).reshape(-1, 2) for c in cases]),
                        mask_bytes=np.array([len(m) for m in masks], np.int64), masks=np.concatenate(masks),
                        kinds=np.array([KINDS.index(c[0]) for c in cases], np.int8),
                        seeds=np.array([c[1] for c in cases], np.int64))


# ----------------------------------------------------------------------------------------- the tests' side

class OpenCV48:
    """A running `serve` process in the scratch environment: `draw(height, width, pts)` is OpenCV 4.8's mask."""

    def __init__(self, python: Path):
        self.process = subprocess.Popen([str(python), __file__, "serve"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)

    def draw(self, height: int, width: int, pts: np.ndarray) -> np.ndarray:
        pts = np.ascontiguousarray(pts, np.int32).reshape(-1, 2)
        self.process.stdin.write(_HEADER.pack(height, width, len(pts)) + pts.tobytes())
        self.process.stdin.flush()
        raw = self.process.stdout.read(height * width)
        if len(raw) != height * width:
            raise RuntimeError(f"the OpenCV 4.8 process died drawing {pts.tolist()} on {height}x{width}")
        return np.frombuffer(raw, np.uint8).reshape(height, width)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def load_corpus(path: Path) -> list[tuple[str, int, int, int, np.ndarray, np.ndarray]]:
    """The stored corpus as (kind, seed, height, width, points, OpenCV 4.8's mask) per case."""
    # An npz decompresses an array on every `data[key]`: read each once (per case it took minutes).
    with np.load(path) as data:
        data = {key: data[key] for key in ("sizes", "counts", "points", "mask_bytes", "masks", "kinds", "seeds")}
    points = np.split(data["points"], np.cumsum(data["counts"])[:-1])
    masks = np.split(data["masks"], np.cumsum(data["mask_bytes"])[:-1])
    cases = []
    for i, (height, width) in enumerate(data["sizes"].tolist()):
        mask = np.unpackbits(masks[i], count=height * width).reshape(height, width)
        cases.append((KINDS[data["kinds"][i]], int(data["seeds"][i]), height, width, points[i], mask))
    return cases


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve()
    elif sys.argv[1:2] == ["corpus"] and len(sys.argv) > 3:
        _corpus(sys.argv[2], [int(s) for s in sys.argv[3:]])
    elif sys.argv[1:2] == ["regressions"] and len(sys.argv) == 3:
        _store(sys.argv[2], [(kind, seed, h, w, np.array(pts, np.int32)) for kind, seed, h, w, pts in REGRESSIONS])
    else:
        sys.exit(__doc__)
