"""ReasonSeg inside lmms-eval, through its own CLI (`python -m lmms_eval`) as a subprocess, offline: the numbers it
writes under --output_path equal `reasonseg score` on the same masks, to the last bit.

lmms-eval exits 0 even when an evaluation fails, so every check reads its results JSON. Each run costs seconds
(it indexes its ~1,900 built-in task files), so the runs are few and share one module-scoped sample.
"""
from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lmms_eval")
pytest.importorskip("pyarrow")

from reasonseg.builders.publish import publish_release  # noqa: E402
from reasonseg.dataset import load_split  # noqa: E402
from reasonseg.integrations.lmms_eval import TASKS_DIR  # noqa: E402
from reasonseg.masks import encode_rle, rasterize_shapes  # noqa: E402
from reasonseg.sample import write_sample_release  # noqa: E402
from reasonseg.schema import Prediction  # noqa: E402
from reasonseg.submission import write_predictions  # noqa: E402

EXE = str(Path(sys.executable).with_name("reasonseg"))
METRICS = {"giou": ("overall", "giou"), "ciou": ("overall", "ciou"), "giou_short": ("short", "giou"),
           "ciou_short": ("short", "ciou"), "giou_long": ("long", "giou"), "ciou_long": ("long", "ciou")}


class CountingProxy(socketserver.ThreadingTCPServer):
    """A proxy on 127.0.0.1 that every HTTP client of the runs is pointed at: it counts connections and serves none."""

    daemon_threads = True
    connections = 0

    def __init__(self):
        super().__init__(("127.0.0.1", 0), socketserver.BaseRequestHandler)

    def process_request(self, request, client_address):
        type(self).connections += 1
        self.shutdown_request(request)


@pytest.fixture(scope="module", autouse=True)
def proxy():
    """Every subprocess of this module sends its HTTP(S) through the counting proxy; none may use it."""
    server = CountingProxy()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            patch.setenv(name, url)
        patch.delenv("NO_PROXY", raising=False)
        patch.delenv("no_proxy", raising=False)
        yield
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A sample release, its published (Parquet) form, and imperfect predictions of val and test."""
    root = tmp_path_factory.mktemp("lmms")
    release = write_sample_release(root / "release", counts={"train": 2, "val": 8, "test": 6})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        publish_release(release, root / "published")
    rng = np.random.default_rng(3)
    masks = {}
    for split in ("val", "test"):
        for s in load_split(release, split):
            target = rasterize_shapes(s.shapes, s.height, s.width) == 1
            masks[split, s.id] = np.roll(target, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1)) | (
                rng.random(target.shape) < 0.03)
    return root, release, root / "published", masks


def predictions_file(path: Path, split: str, masks: dict, *, skip=(), transpose=()) -> Path:
    preds = [Prediction(sid, 0, encode_rle(mask.T if sid in transpose else mask))
             for (s, sid), mask in masks.items() if s == split and sid not in skip]
    return write_predictions(path, preds, split, "imperfect")


def environment(root: Path, data: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "HF_DATASETS_CACHE": str(root / "hfds"),
            "REASONSEG_DATA": str(data), "REASONSEG_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}


def run_lmms_eval(out: Path, data: Path, task: str, model: str, model_args: str, *options: str) -> dict:
    """lmms-eval's CLI on one task; the task's metrics from the results JSON it wrote."""
    proc = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args,
                           "--tasks", task, "--include_path", str(TASKS_DIR), "--output_path", str(out), *options],
                          capture_output=True, text=True, env=environment(out, data), timeout=600)
    written = sorted(out.rglob("*_results.json"))
    assert len(written) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert CountingProxy.connections == 0     # offline: the run never tried the network (HF_HUB_OFFLINE=1)
    return {name.split(",")[0]: value for name, value in json.loads(written[0].read_text())["results"][task].items()
            if name.endswith(",none") and "stderr" not in name}


def reasonseg_score(root: Path, data: Path, predictions: Path, split: str, *args: str) -> dict:
    proc = subprocess.run([EXE, "score", str(data), str(predictions), "--split", split, "--json", *args],
                          capture_output=True, text=True, env=environment(root, data))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_same_numbers(harness: dict, results: dict) -> None:
    for metric, (group, name) in METRICS.items():
        assert harness[metric] == results["groups"][group][name], metric   # exact: the same floats


def test_replay_on_the_published_form_counts_a_wrong_size_mask_as_empty(sample, tmp_path):
    root, release, published, masks = sample
    ids = [s.id for s in load_split(release, "val")]
    # one query the file leaves out (the replay answers no mask) and one transposed mask (the task refuses it)
    preds = predictions_file(tmp_path / "val.json", "val", masks, skip={ids[0]}, transpose={ids[3]})
    harness = run_lmms_eval(tmp_path / "out", published, "reasonseg_val", "reasonseg_replay", f"predictions={preds}")
    assert harness["wrong_size"] == 1 and harness["unparseable"] == 0

    scorable = predictions_file(tmp_path / "scorable.json", "val", masks, skip={ids[0], ids[3]})
    assert_same_numbers(harness, reasonseg_score(root, published, scorable, "val", "--missing", "empty"))
    refused = subprocess.run([EXE, "score", str(published), str(preds), "--split", "val"], capture_output=True,
                             text=True, env=environment(root, published))
    assert refused.returncode == 2 and "size" in refused.stderr   # what the task scores as empty, score refuses


def test_replay_on_the_release_folder_prints_what_score_prints(sample, tmp_path):
    root, release, _, masks = sample
    preds = predictions_file(tmp_path / "test.json", "test", masks)
    harness = run_lmms_eval(tmp_path / "out", release, "reasonseg_test", "reasonseg_replay", f"predictions={preds}")
    assert harness["wrong_size"] == 0 and harness["unparseable"] == 0
    results = reasonseg_score(root, release, preds, "test")
    assert_same_numbers(harness, results)
    assert 0 < results["groups"]["short"]["n"] < results["groups"]["overall"]["n"]   # both groups are exercised
    assert 0 < harness["giou"] < 1


def test_unparseable_answers_of_a_builtin_model_score_as_empty_masks(sample, tmp_path):
    """lmms-eval's own `dummy` model answers prose: every query counts as unparseable and scores as empty."""
    root, release, _, masks = sample
    samples = load_split(release, "val")
    harness = run_lmms_eval(tmp_path / "out", release, "reasonseg_val", "dummy", "response=the dog on the left")
    assert harness["unparseable"] == len(samples) and harness["wrong_size"] == 0
    empty = write_predictions(tmp_path / "empty.json", [Prediction(s.id, 0, encode_rle(
        np.zeros((s.height, s.width), bool))) for s in samples], "val", "empty")
    assert_same_numbers(harness, reasonseg_score(root, release, empty, "val"))


def test_lisa_in_the_harness_equals_reasonseg_predict_and_score(sample, tmp_path):
    pytest.importorskip("torch")
    from reasonseg.lisa.checkpoint import init_release

    root, release, _, _ = sample
    weights = init_release(tmp_path / "tiny", "tiny", "v1", max_shard_size="300KB")
    env = environment(root, release)
    predicted = subprocess.run([EXE, "predict", "--method", "lisa", "--weights", str(weights), str(release),
                                "--split", "val", "--out", str(tmp_path / "lisa.json"), "--batch-size", "2",
                                "--device", "cpu", "--set", "precision=fp32"], capture_output=True, text=True, env=env)
    assert predicted.returncode == 0, predicted.stderr
    harness = run_lmms_eval(tmp_path / "out", release, "reasonseg_val", "reasonseg_lisa",
                            f"weights={weights},precision=fp32,device=cpu", "--batch_size", "2")
    assert harness["unparseable"] == 0 and harness["wrong_size"] == 0
    assert_same_numbers(harness, reasonseg_score(root, release, tmp_path / "lisa.json", "val"))


def test_importing_reasonseg_imports_neither_harness():
    code = ("import sys, reasonseg, reasonseg.integrations, reasonseg.integrations.lmms_eval; "
            "from reasonseg.integrations.lmms_eval import answers, task, registration; reasonseg.ReasonSegMetric; "
            "loaded = [m for m in ('lmms_eval', 'torchmetrics', 'torch') if m in sys.modules]; "
            "assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
