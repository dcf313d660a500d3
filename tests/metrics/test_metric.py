"""The scorer as researchers use it from Python: ReasonSegMetric, score_masks, evaluate_predictions on lists.

Equality with `reasonseg score` is checked against the CLI run as a subprocess, to the last bit.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import reasonseg
from reasonseg.dataset import load_split
from reasonseg.errors import MaskError, ReasonSegError, SubmissionError
from reasonseg.masks import decode_rle, encode_rle, rasterize_shapes
from reasonseg.sample import write_sample_release
from reasonseg.schema import IGNORE, TARGET
from reasonseg.submission import prediction_from_mask, read_predictions, write_predictions

EXE = str(Path(sys.executable).with_name("reasonseg"))
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("metric") / "release", counts={"val": 16, "test": 2,
                                                                                        "train": 2})


@pytest.fixture(scope="module")
def samples(release):
    return load_split(release, "val")


def imperfect_masks(samples, seed=0, all_texts=False):
    """An imperfect model: targets shifted, with speckle, some empty, some spilling into ignore regions."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in samples:
        gt = rasterize_shapes(s.shapes, s.height, s.width)
        for k in range(len(s.texts) if all_texts else 1):
            pred = np.roll((gt == TARGET) | (gt == IGNORE), tuple(rng.integers(-9, 10, size=2)), axis=(0, 1))
            pred = pred | (rng.random(pred.shape) < 0.02)
            if rng.random() < 0.15:
                pred[:] = False
            out[s.id, k] = pred.astype(np.uint8)
    return out


def cli_score(release, preds_path, *args, cache):
    proc = subprocess.run([EXE, "score", str(release), str(preds_path), "--split", "val", "--json", *args],
                          capture_output=True, text=True, env={**os.environ, "REASONSEG_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def without_hash(doc):
    return {k: v for k, v in doc.items() if k != "predictions_sha256"}


@pytest.mark.parametrize("protocol", ["lisa", "all-texts"])
def test_metric_equals_the_cli_to_the_last_bit(tmp_path, release, samples, protocol):
    masks = imperfect_masks(samples, all_texts=protocol == "all-texts")
    path = write_predictions(tmp_path / "p.json", [prediction_from_mask(s, k, m) for (s, k), m in masks.items()],
                             "val", "mine")
    expected = cli_score(release, path, "--protocol", protocol, cache=tmp_path / "cache")

    metric = reasonseg.ReasonSegMetric(release, split="val", protocol=protocol, method="mine",
                                       cache_dir=tmp_path / "cache2")
    for (sid, k), mask in masks.items():
        metric.update(sid, k, mask)
    got = metric.compute()
    assert got["predictions_sha256"] is None
    assert without_hash(got) == without_hash(expected)       # groups, CIs, per-query rows: exact equality
    assert {"overall", "short", "long", "small", "medium", "large"} <= set(got["groups"])

    # The Prediction-list path gives the file's own hash as well.
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    ev = reasonseg.evaluate_predictions(gt, [prediction_from_mask(s, k, m) for (s, k), m in masks.items()],
                                        protocol, method="mine")
    assert ev.document == {**expected, "dataset": ev.document["dataset"]}
    assert ev.document["predictions_sha256"] == expected["predictions_sha256"]


def test_update_takes_batches_tensors_and_ground_truth_objects(tmp_path, release, samples):
    torch = pytest.importorskip("torch")
    masks = imperfect_masks(samples, seed=3)
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    one = reasonseg.ReasonSegMetric(gt, bootstrap=0)
    batched = reasonseg.ReasonSegMetric(gt, split="val", bootstrap=0)
    for (sid, k), mask in masks.items():
        one.update(sid, k, mask)
    by_size = {}
    for (sid, k), mask in masks.items():
        by_size.setdefault(mask.shape, []).append((sid, k, mask))
    for group in by_size.values():
        ids, ks, ms = zip(*group, strict=True)
        # N x 1 x H x W logits as a model returns them, thresholded at 0 as LISA does.
        logits = torch.from_numpy(np.stack(ms)).float()[:, None] * 8 - 4
        batched.update(list(ids), torch.tensor(ks), logits, threshold=0.0)
    assert batched.compute() == one.compute()
    assert len(batched) == len(masks)
    with pytest.raises(ReasonSegError, match="split"):
        reasonseg.ReasonSegMetric(gt, split="test")


def test_merge_reset_and_duplicates(release, samples):
    masks = imperfect_masks(samples, seed=1)
    keys = list(masks)
    whole = reasonseg.ReasonSegMetric(release, split="val", bootstrap=50, cache_dir=None)
    a = reasonseg.ReasonSegMetric(release, split="val", bootstrap=50, cache_dir=None)
    b = reasonseg.ReasonSegMetric(release, split="val", bootstrap=50, cache_dir=None)
    for i, key in enumerate(keys):
        whole.update(*key, masks[key])
        (a if i % 2 else b).update(*key, masks[key])
    b.update(*keys[1], masks[keys[1]])          # a padded duplicate, as DistributedSampler makes: counted once
    assert a.merge(b).compute() == whole.compute()
    with pytest.raises(SubmissionError, match="twice with different masks"):
        a.update(*keys[0], 1 - masks[keys[0]])
    a.reset()
    assert len(a) == 0
    with pytest.raises(SubmissionError, match="have no prediction"):
        a.compute()
    other = reasonseg.ReasonSegMetric(release, split="val", protocol="all-texts", cache_dir=None)
    with pytest.raises(ReasonSegError, match="cannot merge"):
        a.merge(other)


def test_missing_empty_matches_the_file_path(release, samples):
    metric = reasonseg.ReasonSegMetric(release, split="val", missing="empty", bootstrap=0, cache_dir=None)
    first = samples[0]
    metric.update(first.id, 0, rasterize_shapes(first.shapes, first.height, first.width) == TARGET)
    doc = metric.compute()
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    ev = reasonseg.evaluate_predictions(gt, [prediction_from_mask(first.id, 0, rasterize_shapes(
        first.shapes, first.height, first.width) == TARGET)], missing="empty", bootstrap=0)
    assert without_hash(doc) == without_hash(ev.document)


def test_bad_updates_are_clear_errors(release, samples):
    metric = reasonseg.ReasonSegMetric(release, split="val", cache_dir=None)
    s = samples[0]
    probs = np.full((s.height, s.width), 0.3, np.float32)
    with pytest.raises(MaskError, match="threshold="):
        metric.update(s.id, 0, probs)
    with pytest.raises(SubmissionError, match="not in split"):
        metric.update("nosuch", 0, np.zeros((s.height, s.width), bool))
    with pytest.raises(SubmissionError, match="transposed"):
        metric.update(s.id, 0, np.zeros((s.width, s.height), bool))
    with pytest.raises(SubmissionError, match="text_index"):
        metric.update(s.id, 99, np.zeros((s.height, s.width), bool))
    with pytest.raises(SubmissionError, match="non-negative"):
        metric.update(s.id, -1, np.zeros((s.height, s.width), bool))
    with pytest.raises(MaskError, match="2-D"):
        metric.update(s.id, 0, np.zeros((2, s.height, s.width), bool))
    with pytest.raises(ReasonSegError, match="update\\(sample_id"):
        metric.update(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ReasonSegError, match="split="):
        reasonseg.ReasonSegMetric(Path(release))
    assert len(metric) == 0      # nothing half-added


def test_float_masks_need_a_threshold_everywhere():
    probs = np.array([[0.0, 0.2], [0.7, 1.0]], np.float32)
    for call in (lambda **kw: encode_rle(probs, **kw), lambda **kw: prediction_from_mask("a", 0, probs, **kw)):
        with pytest.raises(MaskError, match="threshold"):
            call()
    assert decode_rle(encode_rle(probs, threshold=0.5)).tolist() == [[0, 0], [1, 1]]
    assert decode_rle(prediction_from_mask("a", 0, probs, threshold=0.1).rle).tolist() == [[0, 1], [1, 1]]
    # Exactly-binary floats are unambiguous and accepted; integer masks keep "any non-zero is foreground".
    assert decode_rle(encode_rle(np.array([[0.0, 1.0]]))).tolist() == [[0, 1]]
    assert decode_rle(encode_rle(np.array([[0, 7]], np.int32))).tolist() == [[0, 1]]


def test_score_masks_and_bare_pairs_follow_lisa_rules():
    gt = np.zeros((6, 6), np.uint8)
    gt[1:4, 1:4] = 1
    gt[0, :] = 255                         # ignore: a prediction there counts in neither I nor U
    pred = np.zeros((6, 6), bool)
    pred[0:3, 1:4] = True                  # 6 target pixels hit, 3 on ignore
    out = reasonseg.score_masks([pred, np.zeros((6, 6), bool)], [gt, np.zeros((6, 6), np.uint8)])
    assert out["n"] == 2
    assert out["iou"][0] == pytest.approx(6 / 9, abs=1e-6)
    assert out["iou"][1] == pytest.approx(1.0, abs=1e-6)     # empty union scores 1 under LISA's rule
    assert out["ciou"] == pytest.approx(6 / 9, abs=1e-9)
    batched = reasonseg.score_masks(np.stack([pred, pred]), np.stack([gt, gt]))
    assert batched["iou"] == [out["iou"][0]] * 2
    assert reasonseg.score_masks([pred], [gt], empty_union="zero")["giou"] == pytest.approx(6 / 9, abs=1e-4)
    with pytest.raises(MaskError, match="ground truth is"):
        reasonseg.score_masks([pred], [gt[:5]])
    with pytest.raises(MaskError, match="2 predicted masks but 1"):
        reasonseg.score_masks([pred, pred], [gt])
    metric = reasonseg.ReasonSegMetric(bootstrap=0)
    metric.update(pred, gt)
    assert "1 pairs" in repr(metric)
    doc = metric.compute()
    assert doc["protocol"] == "masks" and set(doc["groups"]) == {"overall", "small", "medium", "large"}


def test_reprs_are_short(tmp_path, release, samples):
    masks = imperfect_masks(samples)
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    ev = reasonseg.evaluate_predictions(gt, [prediction_from_mask(s, k, m) for (s, k), m in masks.items()])
    path = write_predictions(tmp_path / "p.json", [prediction_from_mask(s, k, m) for (s, k), m in masks.items()],
                             "val", "m")
    preds = read_predictions(path)
    metric = reasonseg.ReasonSegMetric(gt)
    for obj in (ev, gt, preds, metric, next(iter(gt.masks.values())), next(iter(preds.masks.values()))):
        assert len(repr(obj)) < 200, repr(obj)
    assert "giou=" in repr(ev) and "16 samples" in repr(gt)


def test_paired_comparison_takes_evaluations_and_documents(release, samples):
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    good = imperfect_masks(samples, seed=0)
    bad = {k: np.zeros_like(m) for k, m in good.items()}
    ev_a = reasonseg.evaluate_predictions(gt, [prediction_from_mask(s, k, m) for (s, k), m in bad.items()],
                                          bootstrap=0)
    ev_b = reasonseg.evaluate_predictions(gt, [prediction_from_mask(s, k, m) for (s, k), m in good.items()],
                                          bootstrap=0)
    diffs = reasonseg.paired_comparison(ev_a, ev_b.document, 200)
    assert [d.metric for d in diffs] == ["giou", "ciou"]
    assert diffs[0].delta > 0 and diffs[0].p_value < 0.05
    sums = reasonseg.image_sums(ev_a.scores)
    assert reasonseg.paired_comparison(sums, ev_b.scores, 200)[1].delta == diffs[1].delta


def test_warnings_for_degenerate_predictions_and_unscored_texts(release, samples):
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    full = [prediction_from_mask(s.id, 0, np.ones((s.height, s.width), bool)) for s in samples]
    with pytest.warns(UserWarning, match="predicted as the whole image"):
        reasonseg.evaluate_predictions(gt, full, bootstrap=0)
    metric = reasonseg.ReasonSegMetric(gt, bootstrap=0)
    for s in samples:
        metric.update(s.id, 0, np.zeros((s.height, s.width), bool))
    with pytest.warns(UserWarning, match="predicted as nothing"):
        metric.compute()
    many = next(s for s in samples if len(s.texts) > 1)
    extra = [prediction_from_mask(s.id, 0, rasterize_shapes(s.shapes, s.height, s.width) == TARGET)
             for s in samples] + [prediction_from_mask(many.id, 1, np.zeros((many.height, many.width), bool))]
    with pytest.warns(UserWarning, match="1 prediction\\(s\\) for text_index > 0 are not scored"):
        reasonseg.evaluate_predictions(gt, extra, bootstrap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reasonseg.evaluate_predictions(gt, extra[:-1], bootstrap=0)


def test_ddp_with_two_gloo_processes_gives_the_single_process_numbers(tmp_path, release, samples):
    pytest.importorskip("torch.distributed")
    masks = imperfect_masks(samples, seed=5)
    np.savez(tmp_path / "masks.npz", **{f"{sid}__{k}": m for (sid, k), m in masks.items()})
    single = reasonseg.ReasonSegMetric(release, split="val", bootstrap=100, cache_dir=None)
    for key, m in masks.items():
        single.update(*key, m)
    expected = single.compute()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    proc = subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(release), str(tmp_path / "masks.npz"),
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == json.loads(json.dumps(expected))
        local = json.loads((tmp_path / f"rank{rank}.local.json").read_text())
        assert 0 < local < len(masks)       # each rank saw only its shard


def test_published_form_scores_like_the_release_folder(tmp_path, release, samples, monkeypatch):
    pytest.importorskip("pyarrow")
    from reasonseg.builders.publish import publish_release

    monkeypatch.setenv("REASONSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        publish_release(release, tmp_path / "hub")
    masks = imperfect_masks(samples, seed=7)
    docs = []
    for data in (release, tmp_path / "hub"):
        metric = reasonseg.ReasonSegMetric(data, split="val", bootstrap=100, cache_dir=tmp_path / "gt-cache")
        for key, m in masks.items():
            metric.update(*key, m)
        docs.append(metric.compute())
    assert docs[0]["groups"] == docs[1]["groups"] and docs[0]["queries"] == docs[1]["queries"]
    assert docs[0]["dataset"]["annotations_sha256"] == docs[1]["dataset"]["annotations_sha256"]
