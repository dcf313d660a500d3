import numpy as np
import pytest

from reasonseg.errors import ResultsError
from reasonseg.metrics.iou import QueryScore
from reasonseg.metrics.stats import bootstrap_ci, image_sums, paired_comparison


def scores_from(iu, texts=1, long_every=2):
    return [QueryScore(f"img{i}", k, i % long_every == 0, a, b) for i, (a, b) in enumerate(iu) for k in range(texts)]


def random_iu(seed, n=80):
    rng = np.random.default_rng(seed)
    union = rng.integers(1, 10_000, n)
    return list(zip((union * rng.random(n)).astype(int).tolist(), union.tolist(), strict=False))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    sums = image_sums(scores_from(random_iu(0)))
    g1, c1 = bootstrap_ci(sums, 500, seed=3)
    g2, c2 = bootstrap_ci(sums, 500, seed=3)
    g3, _ = bootstrap_ci(sums, 500, seed=4)
    assert (g1, c1) == (g2, c2) and g1 != g3
    assert g1[0] < sums.giou() < g1[1] and c1[0] < sums.ciou() < c1[1]


def test_bootstrap_resamples_images_not_queries():
    # Three identical queries per image carry no more information than one: the intervals must be equal.
    iu = random_iu(1)
    one = bootstrap_ci(image_sums(scores_from(iu, texts=1)), 400, seed=0)
    three = bootstrap_ci(image_sums(scores_from(iu, texts=3)), 400, seed=0)
    assert np.allclose(one, three, atol=1e-12)


def test_ciou_is_resampled_as_a_ratio_of_sums():
    # One huge image dominates cIoU: resamples without it move cIoU a lot, a mean of ratios would not.
    iu = [(0, 1_000_000)] + [(90, 100)] * 30
    _, ciou_ci = bootstrap_ci(image_sums(scores_from(iu)), 1000, seed=0)
    assert ciou_ci[0] < 0.01 and ciou_ci[1] > 0.5


def test_paired_comparison_of_identical_methods():
    sums = image_sums(scores_from(random_iu(2)))
    for diff in paired_comparison(sums, sums, 300, seed=0):
        assert diff.delta == 0 and diff.ci == [0.0, 0.0] and diff.p_value == 1.0


def test_paired_comparison_detects_a_clear_improvement_and_is_antisymmetric():
    base = random_iu(3)
    better = [(min(u, i + u // 3), u) for i, u in base]
    a, b = image_sums(scores_from(base)), image_sums(scores_from(better))
    forward = paired_comparison(a, b, 500, seed=0)
    backward = paired_comparison(b, a, 500, seed=0)
    for f, r in zip(forward, backward, strict=False):
        assert f.delta > 0 and f.ci[0] > 0 and f.p_value < 0.01
        assert r.delta == pytest.approx(-f.delta)
    assert forward[0].p_value >= 2 / 501


def test_paired_comparison_aligns_image_order_and_rejects_different_images():
    iu = random_iu(4, 10)
    a = image_sums(scores_from(iu))
    b = image_sums(list(reversed(scores_from(iu))))
    assert all(d.delta == pytest.approx(0, abs=1e-15) for d in paired_comparison(a, b, 50))
    c = image_sums(scores_from(iu[:-1]))
    with pytest.raises(ResultsError, match="different images"):
        paired_comparison(a, c, 10)
