"""LISA's polygons drawn as OpenCV 4.8 draws them (reasonseg.polygon_fill), whatever OpenCV is installed.

Pinned against real OpenCV 4.8 (opencv-python-headless 4.8.0.74, the version LISA's environment pins), three ways:
- the 400 LISA-rule cases of fixtures/opencv48/golden.json.gz (1-3 labelled shapes each, drawn in area order);
- a stored corpus of single polygons from seeds 0-4, 100 of every kind in opencv48.KINDS per seed plus 2 reaching
  2**31 rows above the image (fixtures/opencv48/corpus.npz, written by `python tests/opencv48.py corpus`);
- the polygons on which we once drew another mask (opencv48.REGRESSIONS, fixtures/opencv48/regressions.npz);
- live: new seeds of every kind against OpenCV 4.8 in the scratch environment `make test` builds (.venv-cv48).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opencv48 import KINDS, REGRESSIONS, OpenCV48, load_corpus, random_polygon, scratch_python
from reference import reference_mask

from reasonseg.masks import rasterize_shapes
from reasonseg.polygon_fill import draw_polygon
from reasonseg.schema import IGNORE, TARGET, Shape

FIXTURES = Path(__file__).parent / "fixtures" / "opencv48"
CORPUS_SEEDS = range(5)


def drawn(height: int, width: int, pts: np.ndarray) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    draw_polygon(canvas, pts, 1, height, width)
    return canvas


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(FIXTURES / "corpus.npz")


@pytest.fixture(scope="module")
def opencv48():
    python = scratch_python()
    if python is None:
        pytest.skip("no OpenCV 4.8 scratch environment: `make .venv-cv48` (make test builds it)")
    worker = OpenCV48(python)
    yield worker
    worker.close()


def test_the_400_golden_cases_are_identical_to_opencv48():
    doc = json.loads(gzip.decompress((FIXTURES / "golden.json.gz").read_bytes()))
    assert doc["opencv"] == "4.8.0" and len(doc["cases"]) == 400
    wrong = []
    for k, case in enumerate(doc["cases"]):
        shapes = [Shape(s["label"], tuple(map(tuple, s["points"]))) for s in case["shapes"]]
        mask = rasterize_shapes(shapes, case["height"], case["width"])
        counts = (int((mask == TARGET).sum()), int((mask == IGNORE).sum()))
        if hashlib.sha256(mask.tobytes()).hexdigest() != case["sha256"] or counts != (case["target"], case["ignore"]):
            wrong.append(k)
    assert wrong == []


@pytest.mark.parametrize("seed", CORPUS_SEEDS)
def test_stored_corpus_is_identical_to_opencv48(corpus, seed):
    cases = [c for c in corpus if c[1] == seed]
    assert Counter(kind for kind, *_ in cases) == {**{k: 100 for k in KINDS}, "huge": 102}
    wrong = Counter()
    for kind, _, height, width, pts, expected in cases:
        # Directly, and as a LISA shape through the cropped rasterizer (float points, a window of the image).
        shape = Shape("target", tuple(map(tuple, pts.astype(np.float64).tolist())))
        wrong[kind] += not np.array_equal(drawn(height, width, pts), expected)
        wrong[kind] += not np.array_equal(rasterize_shapes([shape], height, width), expected)
    assert +wrong == Counter()


def test_every_past_mismatch_is_identical_to_opencv48():
    cases = load_corpus(FIXTURES / "regressions.npz")
    assert [(kind, seed, h, w, pts.tolist()) for kind, seed, h, w, pts, _ in cases] == \
        [(kind, seed, h, w, [list(p) for p in pts]) for kind, seed, h, w, pts in REGRESSIONS]
    for kind, seed, height, width, pts, expected in cases:
        shape = Shape("target", tuple(map(tuple, pts.astype(np.float64).tolist())))
        assert np.array_equal(drawn(height, width, pts), expected), (kind, seed)
        assert np.array_equal(rasterize_shapes([shape], height, width), expected), (kind, seed)


def test_the_corpus_exercises_what_it_claims(corpus):
    assert len(corpus) == 5 * (100 * len(KINDS) + 2)
    by_kind = {k: [c for c in corpus if c[0] == k] for k in KINDS}
    for kind, cases in by_kind.items():     # every kind but "outside" draws something on most of its cases
        assert sum(int(c[5].any()) for c in cases) >= (0 if kind == "outside" else 250), kind
    # Wholly outside draws nothing, unless truncation put a vertex on the first row or column (-0.5 becomes 0).
    drawing = [c for c in by_kind["outside"] if c[5].any()]
    assert all((c[4] == 0).any() for c in drawing) and len(drawing) < 50
    assert min(len(c[4]) for c in by_kind["many"]) >= 100
    assert max(np.abs(c[4]).max() for c in by_kind["huge"]) >= 2**31 - 1
    assert min(c[4][:, 1].min() for c in by_kind["huge"]) <= -(2**31) + 1
    # About half the "straddle" polygons reach from above the image to 2**31 rows below its top.
    assert sum(int(np.ptp(c[4][:, 1].astype(np.int64)) >= 2**31) for c in by_kind["straddle"]) >= 200


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.integers(0, 2**63), st.data())
def test_any_window_draws_the_pixels_of_the_whole_image(kind, seed, data):
    height, width, pts = random_polygon(np.random.default_rng(seed), kind)
    full = drawn(height, width, pts)
    y0, x0 = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    y1, x1 = data.draw(st.integers(y0 + 1, height)), data.draw(st.integers(x0 + 1, width))
    window = np.zeros((y1 - y0, x1 - x0), np.uint8)
    draw_polygon(window, pts, 1, height, width, x0, y0)
    assert np.array_equal(window, full[y0:y1, x0:x1])


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.integers(0, 2**63))
@example("huge", 597035347150377)   # REGRESSIONS[0], found by this test
def test_new_seeds_match_live_opencv48(opencv48, kind, seed):
    height, width, pts = random_polygon(np.random.default_rng(seed), kind)
    assert np.array_equal(drawn(height, width, pts), opencv48.draw(height, width, pts)), (height, width, pts.tolist())


def test_larger_images_and_many_shapes_match_live_opencv48(opencv48):
    # Image-sized canvases and the full LISA rule (labels, area order) on many-vertex overlapping shapes; the
    # reference draws with the same OpenCV 4.8 environment (the fixture skips without it).
    rng = np.random.default_rng(2024)
    for _ in range(20):
        height, width = int(rng.integers(200, 700)), int(rng.integers(200, 900))
        raw = []
        for _ in range(int(rng.integers(1, 5))):
            n = int(rng.integers(3, 400))
            centre = rng.uniform(-0.1, 1.1, 2) * (width, height)
            theta = np.sort(rng.uniform(0, 2 * np.pi, n))
            radius = rng.uniform(10, 300) * rng.uniform(0.3, 1.0, n)
            pts = centre + radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1)
            raw.append((str(rng.choice(["target", "ignore"])), pts.tolist()))
        mine = rasterize_shapes([Shape(label, tuple(map(tuple, pts))) for label, pts in raw], height, width)
        assert np.array_equal(mine, reference_mask(raw, height, width))


def test_tall_images_with_int32_extremes_match_live_opencv48(opencv48):
    # 65,536 rows and x at the int32 limits: crossings whose (row, x) no longer fit one sortable int64 key.
    height, width = 1 << 16, 3
    rng = np.random.default_rng(7)
    cases = [[[-(2**31), 0], [2**31 - 1, height - 1], [1, height // 2]],
             [[2**31 - 1, 5], [-(2**31), height - 3], [0, height - 1], [2, 7]]]
    cases += [[[int(rng.choice([-(2**31), 2**31 - 1])), int(rng.integers(0, height))] for _ in range(4)]
              + [[int(rng.integers(0, width)), int(rng.integers(0, height))]] for _ in range(6)]
    for pts in cases:
        pts = np.array(pts, np.int32)
        assert np.array_equal(drawn(height, width, pts), opencv48.draw(height, width, pts)), pts.tolist()


def test_ground_truth_is_drawn_without_opencv(tmp_path):
    # The golden cases, rasterized in a process where importing cv2 fails: whatever OpenCV is installed (or none),
    # the ground truth is the same.
    script = tmp_path / "no_cv2.py"
    script.write_text(
        "import gzip, hashlib, json, sys\n"
        "sys.modules['cv2'] = None  # any `import cv2` now raises ImportError\n"
        "from reasonseg.masks import rasterize_shapes\n"
        "from reasonseg.schema import Shape\n"
        f"doc = json.loads(gzip.decompress(open({str(FIXTURES / 'golden.json.gz')!r}, 'rb').read()))\n"
        "wrong = 0\n"
        "for case in doc['cases']:\n"
        "    shapes = [Shape(s['label'], tuple(map(tuple, s['points']))) for s in case['shapes']]\n"
        "    mask = rasterize_shapes(shapes, case['height'], case['width'])\n"
        "    wrong += hashlib.sha256(mask.tobytes()).hexdigest() != case['sha256']\n"
        "print(len(doc['cases']), wrong)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["400", "0"]


def test_a_canvas_that_cannot_be_written_flat_is_refused():
    pts = np.array([[1, 1], [8, 2], [4, 7]], np.int32)
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        draw_polygon(np.zeros((10, 20), np.uint8)[:, ::2], pts, 1, 10, 10)
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        draw_polygon(np.zeros((10, 10), np.int32), pts, 1, 10, 10)
