"""predict: batching, resumable partial files, weight flags, `--list` and the missing-weights line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from baselines_support import run_cli, small_release, tiny_weights

from reasonseg.baselines.predict import MaskInfo, RunContext, option, partial_path, predict_samples, run_to_file
from reasonseg.baselines.registry import MethodContext, get_method
from reasonseg.baselines.weights import SAM_DEFAULT, MissingWeightsError, Slot, parse_weight_flags, resolve
from reasonseg.dataset import load_split
from reasonseg.errors import MethodError
from reasonseg.metrics.scoring import evaluate
from reasonseg.submission import read_predictions


class Stripes:
    """A deterministic method that counts its calls and can be told to fail after n of them."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[tuple[str, int]] = []
        self.fail_after = fail_after

    def predict(self, sample, query):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(query.key)
        mask = np.zeros((sample.height, sample.width), bool)
        mask[:, query.text_index::3] = True
        return MaskInfo(mask, {"calls": len(self.calls)})


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return small_release(tmp_path_factory.mktemp("rel") / "release")


def test_batches_give_the_same_predictions_as_one_by_one(release):
    samples = load_split(release, "test")
    one = predict_samples(Stripes(), samples, "all-texts", batch_size=1)
    many = predict_samples(Stripes(), samples, "all-texts", batch_size=5)
    assert [(p.key, p.rle) for p in one] == [(p.key, p.rle) for p in many]
    assert len(one) == sum(len(s.texts) for s in samples) > len(samples)


def test_a_wrong_mask_size_names_the_sample(release):
    class Wrong:
        def predict(self, sample, query):
            return np.zeros((3, 3), bool)

    samples = load_split(release, "val")
    with pytest.raises(MethodError, match=samples[0].id):
        predict_samples(Wrong(), samples)


def test_interrupted_run_resumes_without_recomputing(release, tmp_path):
    samples = load_split(release, "test")
    out = tmp_path / "preds.json"
    with pytest.raises(KeyboardInterrupt):
        run_to_file(Stripes(fail_after=5), samples, out, split="test", method_name="stripes",
                    protocol="all-texts", batch_size=2)
    assert not out.exists()
    lines = partial_path(out).read_text().splitlines()
    assert len(lines) == 1 + 4          # header + two finished batches of 2; the third batch died mid-way
    with open(partial_path(out), "a") as fh:
        fh.write('{"id": "torn')       # a write cut off by the interruption
    second = Stripes()
    result = run_to_file(second, samples, out, split="test", method_name="stripes", protocol="all-texts",
                         batch_size=2)
    total = sum(len(s.texts) for s in samples)
    assert (result.n_resumed, result.n_predicted) == (4, total - 4)
    assert len(second.calls) == total - 4 and len(set(second.calls)) == total - 4
    assert not partial_path(out).exists()
    fresh = tmp_path / "fresh.json"
    run_to_file(Stripes(), samples, fresh, split="test", method_name="stripes", protocol="all-texts")
    strip = lambda doc: [(p["id"], p["text_index"], p["mask"]) for p in doc["predictions"]]  # noqa: E731
    assert strip(json.loads(out.read_text())) == strip(json.loads(fresh.read_text()))
    assert len(read_predictions(out).masks) == total


def test_partial_file_of_other_settings_is_refused_unless_restarted(release, tmp_path):
    samples = load_split(release, "val")
    out = tmp_path / "preds.json"
    with pytest.raises(KeyboardInterrupt):
        run_to_file(Stripes(fail_after=1), samples, out, split="val", method_name="stripes", options={"t": 1})
    with pytest.raises(MethodError, match="--restart"):
        run_to_file(Stripes(), samples, out, split="val", method_name="stripes", options={"t": 2})
    counted = Stripes()
    result = run_to_file(counted, samples, out, split="val", method_name="stripes", options={"t": 2},
                         restart=True)
    assert result.n_resumed == 0 and len(counted.calls) == len(samples)


def test_predictions_file_scores_and_records_meta_and_info(release, tmp_path):
    samples = load_split(release, "val")
    out = run_to_file(Stripes(), samples, tmp_path / "p.json", split="val", method_name="stripes",
                      meta={"threshold": 0.5}).out
    doc = json.loads(out.read_text())
    assert doc["meta"] == {"threshold": 0.5}
    assert [p["info"]["calls"] for p in doc["predictions"]] == list(range(1, len(samples) + 1))
    evaluation = evaluate(release, out, "val", bootstrap=0, cache_dir=None)
    assert evaluation.document["groups"]["overall"]["n"] == len(samples)
    assert 0 < evaluation.document["groups"]["overall"]["giou"] < 1


def test_weight_flags_fill_named_and_first_slots(tmp_path):
    slots = (Slot("dino", "x/dino"), Slot("sam", SAM_DEFAULT, "sam"))
    bare, named = parse_weight_flags([str(tmp_path), f"sam={tmp_path}/s.pth"], slots)
    assert bare == tmp_path and named == {"dino": tmp_path, "sam": tmp_path / "s.pth"}
    with pytest.raises(MethodError, match="no weight slot 'vlm'"):
        parse_weight_flags(["vlm=/nowhere"], slots)
    with pytest.raises(MethodError, match="twice"):
        parse_weight_flags(["/a", "/b"], slots)


def test_missing_weight_given_as_a_path_names_what_it_should_hold(tmp_path):
    with pytest.raises(MissingWeightsError) as caught:
        resolve("clipseg", Slot("clipseg", "CIDAS/clipseg-rd64-refined"), tmp_path)
    assert "config.json" in str(caught.value) and "hf download CIDAS/clipseg-rd64-refined" in str(caught.value)


def test_options_convert_and_reject_bad_values(release):
    ctx = RunContext(release, options={"threshold": "0.25", "multimask": "yes", "n": "x"})
    assert option(ctx, "threshold", None, float) == 0.25
    assert option(ctx, "multimask", False, bool) is True
    assert option(MethodContext(release), "threshold", 0.5, float) == 0.5
    with pytest.raises(MethodError, match="n='x'"):
        option(ctx, "n", 1, int)


def test_cli_list_reports_missing_and_present_weights(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "REASONSEG_WEIGHTS": str(tmp_path / "none")}
    missing = run_cli("predict", "--list", env=env)
    assert missing.returncode == 0, missing.stderr
    lines = {line.split()[0]: line for line in missing.stdout.splitlines()}
    assert "dino=IDEA-Research/grounding-dino-tiny: missing" in lines["grounded-sam"]
    assert "sam=sam_vit_h_4b8939.pth: missing" in lines["oracle-box-sam"]
    assert "[oracle]" in lines["oracle-sam-best"] and "[oracle]" not in lines["clipseg"]
    assert "none needed" in lines["empty"]
    sam = tiny_weights()["sam"]
    present = run_cli("predict", "--list", "--weights", f"sam={sam}", env=env)
    lines = {line.split()[0]: line for line in present.stdout.splitlines()}
    assert "sam=sam_vit_h_4b8939.pth: present" in lines["oracle-box-sam"]
    assert "dino=IDEA-Research/grounding-dino-tiny: missing" in lines["grounded-sam"]
    # The local weights folder is looked in too (REASONSEG_WEIGHTS), under the published file name.
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / SAM_DEFAULT).write_bytes(sam.read_bytes())
    found = run_cli("predict", "--list", env=env)
    assert "sam=sam_vit_h_4b8939.pth: present" in found.stdout


def test_cli_missing_weight_is_one_line_naming_model_and_flag(release, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf")}
    proc = run_cli("predict", "--method", "grounded-sam", str(release), "--split", "val", "--out",
                   str(tmp_path / "p.json"), env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "IDEA-Research/grounding-dino-tiny" in lines[0] and "--weights dino=DIR" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "p.json").exists()


def test_cli_limit_and_batch_size(release, tmp_path):
    out = tmp_path / "p.json"
    proc = run_cli("predict", "--method", "full", str(release), "--split", "test", "--out", str(out),
                   "--limit", "2", "--batch-size", "3", "--protocol", "all-texts")
    assert proc.returncode == 0, proc.stderr
    samples = load_split(release, "test")[:2]
    doc = json.loads(out.read_text())
    assert len(doc["predictions"]) == sum(len(s.texts) for s in samples)
    assert doc["meta"]["oracle"] is False
    assert get_method("full").oracle is False and get_method("oracle-box-sam").oracle is True
