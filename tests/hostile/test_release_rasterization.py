"""Far-out polygon coordinates: the mask is exactly the reference's (LISA's rasterization: cv2.polylines +
cv2.fillPoly on int32-truncated points, with the OpenCV 4.8 LISA pins; tests/reference.py), and a +-1e9 shape
costs no seconds."""
from __future__ import annotations

import time

import numpy as np
import pytest
from reference import reference_mask

from reasonseg.masks import rasterize_shapes
from reasonseg.schema import Shape

LABELS = ["target", "ignore", "Target_2", "flag"]


def _random_shapes(rng: np.random.Generator, height: int, width: int, far: float) -> list[tuple[str, list]]:
    shapes = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(1, 8))
        x = rng.uniform(-40, width + 40, n)
        y = rng.uniform(-40, height + 40, n)
        # Some vertices far out (beyond the rows OpenCV walks cheaply), on any side.
        out = rng.random(n) < 0.5
        x[out] = rng.choice([-1, 1], out.sum()) * rng.uniform(far / 4, far, out.sum())
        out = rng.random(n) < 0.5
        y[out] = rng.choice([-1, 1], out.sum()) * rng.uniform(far / 4, far, out.sum())
        shapes.append((str(rng.choice(LABELS)), np.stack([x, y], 1).round(2).tolist()))
    return shapes


@pytest.mark.parametrize("seed", range(3))
def test_far_out_shapes_match_the_reference(seed):
    rng = np.random.default_rng(seed)
    far_path = 0
    for _ in range(30):
        height, width = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        raw = _random_shapes(rng, height, width, far=4e5)
        far_path += any(min(p[1] for p in pts) < -(1 << 16) for _, pts in raw)
        mine = rasterize_shapes([Shape(label, tuple(map(tuple, pts))) for label, pts in raw], height, width)
        assert np.array_equal(mine, reference_mask(raw, height, width)), raw
    assert far_path >= 6  # polygons starting more than 2**16 rows above the image were drawn


def test_one_billion_out_matches_the_reference_and_is_fast():
    points = [[-1e9, -1e9], [1e9, -1e9], [1e9, 1e9], [-3e8, 7e8], [200.7, 100.2]]
    shape = Shape("target", tuple(map(tuple, points)))
    started = time.perf_counter()
    mine = rasterize_shapes([shape], 240, 320)
    elapsed = time.perf_counter() - started
    expected = reference_mask([("target", points)], 240, 320)  # OpenCV 4.8: about ten seconds for these rows
    assert np.array_equal(mine, expected) and 0 < mine.sum() < 240 * 320
    assert elapsed < 2.0, elapsed
