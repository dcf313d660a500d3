import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools import mask as cocomask
from reference import reference_iu, reference_mask

from reasonseg.errors import MaskError
from reasonseg.masks import (
    decode_rle,
    encode_rle,
    intervals_intersection_area,
    intervals_to_mask,
    mask_to_intervals,
    mask_to_polygons,
    rasterize_shapes,
    resize_mask,
    rle_counts,
    rle_to_intervals,
)
from reasonseg.metrics.iou import intersection_union
from reasonseg.schema import Shape

LABELS = ["target", "Target", "ignore", "ignore_2", "IGNORE region", "flag", "FLAG", "flags", "car"]
coord = st.floats(min_value=-40, max_value=140, allow_nan=False, allow_infinity=False)
polygon = st.lists(st.tuples(coord, coord), min_size=1, max_size=9)
shapes_strategy = st.lists(st.tuples(st.sampled_from(LABELS), polygon), min_size=0, max_size=6)


def as_shapes(raw):
    return [Shape(label, tuple(pts)) for label, pts in raw]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes_strategy, st.integers(1, 120), st.integers(1, 120))
def test_rasterization_is_bit_exact_to_the_reference(raw, height, width):
    expected = reference_mask([(label, [list(p) for p in pts]) for label, pts in raw], height, width)
    assert np.array_equal(rasterize_shapes(as_shapes(raw), height, width), expected)


def test_flag_is_skipped_by_exact_match_only():
    square = ((10.0, 10.0), (30.0, 10.0), (30.0, 30.0), (10.0, 30.0))
    assert rasterize_shapes([Shape("Flag", square)], 50, 50).max() == 0
    assert rasterize_shapes([Shape("flags", square)], 50, 50).max() == 1


def test_ignore_is_a_substring_match():
    square = ((10.0, 10.0), (30.0, 10.0), (30.0, 30.0), (10.0, 30.0))
    assert rasterize_shapes([Shape("to_IGNORE_this", square)], 50, 50).max() == 255


def test_smaller_shape_drawn_last_overwrites_larger():
    big = ((0.0, 0.0), (40.0, 0.0), (40.0, 40.0), (0.0, 40.0))
    small = ((10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0))
    # Order in the file does not matter: area does.
    for shapes in ([Shape("target", small), Shape("ignore", big)], [Shape("ignore", big), Shape("target", small)]):
        mask = rasterize_shapes(shapes, 50, 50)
        assert mask[15, 15] == 1 and mask[5, 5] == 255


def _blob(rng, cx, cy, radius, n):
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    wobble = 1 + 0.2 * np.sin(5 * theta) + rng.normal(0, 0.02, n)
    return np.stack([cx + radius * wobble * np.cos(theta), cy + radius * wobble * np.sin(theta)], 1).tolist()


@pytest.mark.parametrize("seed", range(12))
def test_large_overlapping_shapes_match_the_reference_in_every_order(seed):
    # Many-vertex shapes, some of one value overlapping each other, an ignore region that overlaps them or not,
    # in random file order: the drawing order (by area) matters only where values differ.
    rng = np.random.default_rng(seed)
    shapes = [("target", _blob(rng, rng.uniform(60, 140), rng.uniform(60, 100), rng.uniform(30, 60), 120))
              for _ in range(int(rng.integers(2, 4)))]
    shapes += [("ignore", _blob(rng, rng.uniform(0, 200), rng.uniform(0, 160), rng.uniform(10, 50), 60))
               for _ in range(int(rng.integers(0, 3)))]
    order = rng.permutation(len(shapes))
    shapes = [shapes[i] for i in order]
    expected = reference_mask(shapes, 160, 200)
    assert np.array_equal(rasterize_shapes(as_shapes([(label, [tuple(p) for p in pts]) for label, pts in shapes]),
                                           160, 200), expected)


def test_points_are_truncated_not_rounded():
    # x = 9.9 truncates to 9: the outline includes column 9, rounding would start at 10.
    tri = ((9.9, 0.0), (20.0, 0.0), (20.0, 10.0), (9.9, 10.0))
    mask = rasterize_shapes([Shape("target", tri)], 12, 25)
    assert mask[5, 9] == 1 and mask[5, 8] == 0


def test_negative_coordinates_truncate_toward_zero():
    rect = ((-0.9, 2.0), (5.0, 2.0), (5.0, 6.0), (-0.9, 6.0))
    mask = rasterize_shapes([Shape("target", rect)], 10, 10)
    expected = reference_mask([("target", [list(p) for p in rect])], 10, 10)
    assert np.array_equal(mask, expected) and mask[4, 0] == 1


def test_shape_outside_the_image_draws_nothing():
    far = ((200.0, 200.0), (300.0, 200.0), (300.0, 300.0))
    assert rasterize_shapes([Shape("target", far)], 50, 50).max() == 0


def test_empty_shapes_give_empty_mask():
    assert rasterize_shapes([], 7, 9).shape == (7, 9)
    assert rasterize_shapes([], 7, 9).max() == 0


# ---------------------------------------------------------------------------------------------------- RLE

mask_strategy = st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0, 1))


def random_mask(h, w, seed, density):
    return (np.random.default_rng(seed).random((h, w)) < density).astype(np.uint8)


@settings(max_examples=300, deadline=None)
@given(mask_strategy)
def test_rle_roundtrip_matches_pycocotools(params):
    m = random_mask(*params)
    rle = encode_rle(m)
    assert isinstance(rle["counts"], str)
    ours = decode_rle(rle)
    theirs = cocomask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(ours, m) and np.array_equal(theirs, m)
    assert int(cocomask.area({"size": rle["size"], "counts": rle["counts"].encode()})) == int(m.sum())


@settings(max_examples=300, deadline=None)
@given(mask_strategy, mask_strategy)
def test_interval_intersection_matches_numpy(p1, p2):
    a = random_mask(*p1)
    b = random_mask(p1[0], p1[1], p2[2], p2[3])
    ia, ib = rle_to_intervals(encode_rle(a)), mask_to_intervals(b)
    assert intervals_intersection_area(ia, ib) == int((a & b).sum())
    assert np.array_equal(intervals_to_mask(ia, *a.shape), a)


@settings(max_examples=300, deadline=None)
@given(shapes_strategy, st.integers(1, 60), st.integers(1, 60), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_intersection_union_matches_reference(raw, h, w, seed, density):
    gt = reference_mask([(label, [list(p) for p in pts]) for label, pts in raw], h, w)
    pred = random_mask(h, w, seed, density)
    target, ignore = mask_to_intervals(gt == 1), mask_to_intervals(gt == 255)
    assert intersection_union(target, ignore, mask_to_intervals(pred)) == reference_iu(gt, pred)


def test_uncompressed_counts_are_accepted():
    assert np.array_equal(decode_rle({"size": [2, 2], "counts": [1, 2, 1]}), np.array([[0, 1], [1, 0]]))


@pytest.mark.parametrize("rle, message", [
    ({"size": [2, 2], "counts": "5"}, "cover"),                    # 5 pixels for a 2x2 mask
    ({"size": [2, 2], "counts": "\x7f"}, "alphabet"),
    ({"size": [2, 2], "counts": "0P"}, "middle of a value"),      # 'P' = 0x20 continuation, then the end
    ({"size": [2, 2], "counts": "oooooooo0"}, "too long"),
    ({"size": [2, 2], "counts": [-1, 5]}, "negative"),
    ({"size": [2, -2], "counts": "4"}, "size"),
    ({"size": [2], "counts": "4"}, "size"),
    ({"size": [2, 2]}, "'size' and 'counts'"),
    ({"size": [2, 2], "counts": 4}, "string or a list"),
])
def test_malformed_rle_is_rejected_before_pycocotools_sees_it(rle, message):
    with pytest.raises(MaskError, match=message):
        rle_counts(rle)


def test_polygons_reproduce_a_hole_free_mask():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 5:40] = 1
    mask[35:55, 50:75] = 1
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    redrawn = rasterize_shapes([Shape("target", tuple(map(tuple, p))) for p in polygons], 60, 80)
    assert np.array_equal(redrawn, mask)


def test_resize_mask_keeps_label_values_and_exact_size():
    mask = np.array([[0, 1], [255, 1]], np.uint8)
    out = resize_mask(mask, 7, 5)
    assert out.shape == (7, 5) and set(np.unique(out)) <= {0, 1, 255}
