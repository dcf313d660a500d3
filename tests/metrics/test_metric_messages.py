"""What `ReasonSegMetric` tells a Python user: hints in the library's terms (`missing="empty"`,
`protocol="all-texts"`, not the command line's `--missing empty`), no threshold warning about queries that were
never updated, and `method=` in the document (the command line keeps its own hints)."""
import warnings

import numpy as np
import pytest

import reasonseg
from reasonseg.errors import SubmissionError
from reasonseg.masks import rasterize_shapes
from reasonseg.sample import write_sample_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("metric-messages") / "release")


def test_missing_queries_get_the_library_hint(release):
    metric = reasonseg.ReasonSegMetric(release, split="val", bootstrap=0, cache_dir=None)
    first = reasonseg.load_split(release, "val")[0]
    metric.update(first.id, 0, np.zeros((first.height, first.width), bool))
    with pytest.raises(SubmissionError) as caught:
        metric.compute()
    assert 'missing="empty"' in str(caught.value) and "--missing" not in str(caught.value)
    gt = reasonseg.load_ground_truth(release, "val", cache_dir=None)
    with pytest.raises(SubmissionError) as caught:   # predictions in memory: Python too
        reasonseg.evaluate_predictions(gt, [reasonseg.prediction_from_mask(first.id, 0, np.zeros(
            (first.height, first.width), bool))], bootstrap=0)
    assert 'missing="empty"' in str(caught.value) and "--missing" not in str(caught.value)
    # A text the lisa rules do not score: the warning names protocol="all-texts".
    many = next(s for s in reasonseg.load_split(release, "val") if len(s.texts) > 1)
    extra = reasonseg.ReasonSegMetric(release, split="val", missing="empty", bootstrap=0, cache_dir=None)
    extra.update(many.id, 1, np.zeros((many.height, many.width), bool))
    with pytest.warns(UserWarning, match='pass protocol="all-texts"'):
        extra.compute()


def test_missing_empty_does_not_blame_the_threshold_for_queries_never_updated(release):
    samples = reasonseg.load_split(release, "val")
    metric = reasonseg.ReasonSegMetric(release, split="val", missing="empty", bootstrap=0, cache_dir=None,
                                       method="my-model")
    for sample in samples[:3]:            # three good masks, the other queries never updated
        metric.update(sample.id, 0, rasterize_shapes(sample.shapes, sample.height, sample.width) == 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = metric.compute()
    assert not [w for w in caught if "threshold" in str(w.message)], [str(w.message) for w in caught]
    assert doc["method"] == "my-model" and doc["groups"]["overall"]["n"] == len(samples)
    # Masks that were updated and are empty still draw the warning.
    empty = reasonseg.ReasonSegMetric(release, split="val", bootstrap=0, cache_dir=None)
    for sample in samples:
        empty.update(sample.id, 0, np.zeros((sample.height, sample.width), bool))
    with pytest.warns(UserWarning, match="threshold too high"):
        empty.compute()
