"""ReasonSegIoU, the torchmetrics Metric: equal to `reasonseg score` (run as a subprocess) and to ReasonSegMetric
on one process, and on two gloo ranks where torchmetrics synchronises the per-query states."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

from reasonseg.dataset import load_split  # noqa: E402
from reasonseg.errors import SubmissionError  # noqa: E402
from reasonseg.integrations.torchmetrics import ReasonSegIoU  # noqa: E402
from reasonseg.masks import encode_rle, rasterize_shapes  # noqa: E402
from reasonseg.metrics.metric import ReasonSegMetric  # noqa: E402
from reasonseg.sample import write_sample_release  # noqa: E402
from reasonseg.schema import Prediction  # noqa: E402
from reasonseg.submission import write_predictions  # noqa: E402

EXE = str(Path(sys.executable).with_name("reasonseg"))
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A val split of 9 images and an imperfect mask per image (shifted, speckled, one empty)."""
    root = tmp_path_factory.mktemp("torchmetrics")
    release = write_sample_release(root / "release", counts={"train": 2, "val": 9, "test": 2})
    rng = np.random.default_rng(5)
    masks = {}
    for s in load_split(release, "val"):
        target = rasterize_shapes(s.shapes, s.height, s.width) == 1
        masks[s.id] = np.roll(target, tuple(rng.integers(-8, 9, size=2)), axis=(0, 1)) | (
            rng.random(target.shape) < 0.02)
    masks[sorted(masks)[4]][:] = False
    preds = write_predictions(root / "val.json", [Prediction(sid, 0, encode_rle(m)) for sid, m in masks.items()],
                              "val", "imperfect")
    proc = subprocess.run([EXE, "score", str(release), str(preds), "--split", "val", "--json", "--bootstrap", "100"],
                          capture_output=True, text=True, env={**os.environ, "REASONSEG_CACHE": str(root / "cache")})
    assert proc.returncode == 0, proc.stderr
    return root, release, masks, json.loads(proc.stdout)


def same_numbers(document: dict, expected: dict) -> bool:
    return document["groups"] == expected["groups"] and document["queries"] == expected["queries"]


def test_one_process_equals_score_and_reasonseg_metric(split):
    _, release, masks, scored = split
    metric = ReasonSegIoU(release, split="val", bootstrap=100, cache_dir=None)
    ids = sorted(masks)
    metric.update(ids[:3], [0, 0, 0], [torch.from_numpy(masks[i]) for i in ids[:3]])
    for sid in ids[3:]:
        metric.update(sid, 0, torch.from_numpy(masks[sid]).to(torch.float32), threshold=0.5)
    metric.update(ids[0], 0, masks[ids[0]])          # the same mask again (a padded batch) counts once
    numbers = metric.compute()
    assert numbers["giou"].item() == scored["groups"]["overall"]["giou"]
    assert numbers["ciou"].item() == scored["groups"]["overall"]["ciou"]
    assert same_numbers(metric.document(), scored)

    plain = ReasonSegMetric(release, split="val", bootstrap=100, cache_dir=None)
    for sid, mask in masks.items():
        plain.update(sid, 0, mask)
    assert same_numbers(plain.compute(), scored)
    assert len(metric.query) == 1 + (len(ids) - 3) + 1   # one small tensor per update call: no masks kept

    metric.reset()
    with pytest.raises(SubmissionError, match="have no prediction"), pytest.warns(UserWarning, match="before"):
        metric.compute()                              # as `score`: every query needs a prediction


def test_a_query_updated_with_two_masks_is_refused(split):
    _, release, masks, _ = split
    metric = ReasonSegIoU(release, split="val", missing="empty", cache_dir=None)
    sid = sorted(masks)[0]
    metric.update(sid, 0, masks[sid])
    metric.update(sid, 0, ~masks[sid])
    with pytest.raises(SubmissionError, match="twice with different masks"):
        metric.compute()


def test_two_gloo_ranks_equal_one_process(split, tmp_path):
    _, release, masks, scored = split
    np.savez(tmp_path / "masks.npz", **masks)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(HERE / "torchmetrics_ddp_worker.py"), str(release),
                           str(tmp_path / "masks.npz"), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["numbers"] == {"giou": scored["groups"]["overall"]["giou"],
                                  "ciou": scored["groups"]["overall"]["ciou"]}
        assert same_numbers(got["document"], scored)
        assert got["local_rows"] == 5                  # each rank held its shard (9 queries padded to 10)
