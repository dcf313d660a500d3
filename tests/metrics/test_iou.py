import json

import numpy as np
import pytest
from helpers import random_annotation, write_release
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_aggregates, reference_iu, reference_mask

from reasonseg.metrics.groundtruth import load_ground_truth
from reasonseg.metrics.iou import QueryScore, ciou, giou
from reasonseg.metrics.scoring import evaluate
from reasonseg.submission import prediction_from_mask, write_predictions

pairs = st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)).map(lambda t: (min(t), max(t))),
                 min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_aggregates_match_the_reference(iu):
    scores = [QueryScore(str(k), 0, False, i, u) for k, (i, u) in enumerate(iu)]
    ref_giou, ref_ciou = reference_aggregates(iu)
    assert abs(giou(scores) - ref_giou) <= 1e-12
    assert abs(ciou(scores) - ref_ciou) <= 1e-12


def test_empty_union_policies():
    empty = QueryScore("a", 0, False, 0, 0)
    half = QueryScore("b", 0, False, 5, 10)
    assert empty.iou("one") == 1.0
    assert empty.iou("zero") == 0.0
    assert empty.iou("skip") is None
    assert giou([empty, half], "skip") == pytest.approx(half.iou() / (1 + 1e-5), abs=1e-15)
    assert giou([empty, half], "zero") == pytest.approx(half.iou() / (2 + 1e-5), abs=1e-15)


def test_count_epsilon_keeps_a_perfect_score_below_one():
    # The reference's meter divides by (count + 1e-5): a perfect split scores 1/(1+1e-5), not 1.
    perfect = QueryScore("a", 0, True, 100, 100)
    assert giou([perfect]) == pytest.approx((100 / (100 + 1e-5)) / (1 + 1e-5), abs=1e-15)
    assert giou([perfect]) < 1.0


def _random_release(tmp_path, seed, n=12, n_texts=1):
    rng = np.random.default_rng(seed)
    sizes = {f"img{k:02d}": (int(rng.integers(20, 90)), int(rng.integers(20, 90))) for k in range(n)}
    anns = {sid: random_annotation(rng, h, w, n_texts) for sid, (h, w) in sizes.items()}
    write_release(tmp_path / "rel", "val", anns, sizes)
    return tmp_path / "rel", anns, sizes, rng


@pytest.mark.parametrize("seed", range(6))
def test_end_to_end_scoring_matches_the_reference(tmp_path, seed):
    root, anns, sizes, rng = _random_release(tmp_path, seed)
    preds, pairs_ = [], []
    for sid, (h, w) in sizes.items():
        pred = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if rng.random() < 0.2:
            pred[:] = 0
        preds.append(prediction_from_mask(sid, 0, pred))
        gt = reference_mask([(s["label"], s["points"]) for s in anns[sid]["shapes"]], h, w)
        pairs_.append(reference_iu(gt, pred))
    write_predictions(tmp_path / "p.json", preds, "val", "random")
    ev = evaluate(root, tmp_path / "p.json", "val", cache_dir=None, bootstrap=0)
    got = {s.id: (s.intersection, s.union) for s in ev.scores}
    assert [got[sid] for sid in sizes] == pairs_
    ref_giou, ref_ciou = reference_aggregates(pairs_)
    overall = ev.document["groups"]["overall"]
    assert abs(overall["giou"] - ref_giou) <= 1e-12 and abs(overall["ciou"] - ref_ciou) <= 1e-12


def test_all_texts_protocol_scores_every_text_and_lisa_only_the_first(tmp_path):
    root, anns, sizes, rng = _random_release(tmp_path, 1, n=4, n_texts=3)
    preds = [prediction_from_mask(sid, k, (rng.random((h, w)) < 0.5).astype(np.uint8))
             for sid, (h, w) in sizes.items() for k in range(3)]
    write_predictions(tmp_path / "p.json", preds, "val", "m")
    lisa = evaluate(root, tmp_path / "p.json", "val", "lisa", cache_dir=None, bootstrap=0)
    every = evaluate(root, tmp_path / "p.json", "val", "all-texts", cache_dir=None, bootstrap=0)
    assert {s.text_index for s in lisa.scores} == {0} and len(lisa.scores) == 4
    assert len(every.scores) == 12
    assert every.document["protocol"] == "all-texts"


def test_ground_truth_cache_is_used_and_invalidated(tmp_path):
    root, anns, sizes, _ = _random_release(tmp_path, 2, n=3)
    cache = tmp_path / "cache"
    first = load_ground_truth(root, "val", cache_dir=cache)
    files = list(cache.glob("gt-*.npz"))
    assert len(files) == 1
    again = load_ground_truth(root, "val", cache_dir=cache)
    for sid in first.masks:
        a, b = first.masks[sid], again.masks[sid]
        assert (a.height, a.width, a.texts, a.is_sentence) == (b.height, b.width, b.texts, b.is_sentence)
        assert all(np.array_equal(x, y) for x, y in zip(a.target + a.ignore, b.target + b.ignore, strict=False))
    assert again.fingerprint == first.fingerprint
    # Changing an annotation must not be scored against the stale cache.
    sid = next(iter(sizes))
    ann = anns[sid] | {"shapes": [{"label": "target", "points": [[0, 0], [10, 0], [10, 10], [0, 10]]}],
                       "text": ["changed text, longer"]}
    (root / "val" / f"{sid}.json").write_text(json.dumps(ann))
    changed = load_ground_truth(root, "val", cache_dir=cache)
    assert changed.masks[sid].texts == ("changed text, longer",)
    assert changed.fingerprint != first.fingerprint
    assert len(list(cache.glob("gt-*.npz"))) == 2


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    root, *_ = _random_release(tmp_path, 3, n=2)
    cache = tmp_path / "cache"
    load_ground_truth(root, "val", cache_dir=cache)
    path = next(cache.glob("gt-*.npz"))
    path.write_bytes(b"garbage")
    gt = load_ground_truth(root, "val", cache_dir=cache)
    assert len(gt.masks) == 2


def test_ignore_pixels_are_removed_from_the_prediction():
    from reasonseg.masks import mask_to_intervals
    from reasonseg.metrics.iou import intersection_union

    gt = np.zeros((10, 10), np.uint8)
    gt[2:5, 2:5] = 1          # 9 target pixels
    gt[6:9, 6:9] = 255        # 9 ignore pixels
    pred = np.zeros((10, 10), np.uint8)
    pred[2:5, 2:5] = 1
    pred[6:9, 6:9] = 1        # predicting the ignore region costs nothing
    target, ignore = mask_to_intervals(gt == 1), mask_to_intervals(gt == 255)
    assert intersection_union(target, ignore, mask_to_intervals(pred)) == (9, 9)
    pred[0, 0] = 1            # a background pixel does
    assert intersection_union(target, ignore, mask_to_intervals(pred)) == (9, 10)


def test_ignore_only_ground_truth_with_empty_prediction_is_an_empty_union():
    from reasonseg.masks import mask_to_intervals
    from reasonseg.metrics.iou import intersection_union

    gt = np.full((4, 4), 255, np.uint8)
    pred = np.ones((4, 4), np.uint8)  # everything predicted lies in ignore: P' is empty
    i, u = intersection_union(mask_to_intervals(gt == 1), mask_to_intervals(gt == 255), mask_to_intervals(pred))
    assert (i, u) == (0, 0) and QueryScore("x", 0, False, i, u).iou() == 1.0


def test_ciou_epsilon_with_no_union_at_all():
    scores = [QueryScore("a", 0, False, 0, 0), QueryScore("b", 0, True, 0, 0)]
    assert ciou(scores) == 0.0  # 0 / (0 + 1e-10), not a division error
    assert giou(scores) == pytest.approx(2 / (2 + 1e-5), abs=1e-15)


def test_each_query_is_counted_once_even_when_predictions_repeat(tmp_path):
    # The reference's padded multi-GPU sampler counts some images twice; a repeated prediction is refused here.
    from reasonseg.errors import SubmissionError
    from reasonseg.submission import read_predictions

    root, anns, sizes, rng = _random_release(tmp_path, 5, n=3)
    sid, (h, w) = next(iter(sizes.items()))
    pred = prediction_from_mask(sid, 0, np.ones((h, w), np.uint8))
    write_predictions(tmp_path / "dup.json", [pred, pred], "val", "m")
    with pytest.raises(SubmissionError, match="duplicate"):
        read_predictions(tmp_path / "dup.json")
    preds = [prediction_from_mask(s, 0, np.ones(hw, np.uint8)) for s, hw in sizes.items()]
    write_predictions(tmp_path / "ok.json", preds, "val", "m")
    ev = evaluate(root, tmp_path / "ok.json", "val", cache_dir=None, bootstrap=0)
    assert sorted(s.id for s in ev.scores) == sorted(sizes) and ev.document["groups"]["overall"]["n"] == 3
