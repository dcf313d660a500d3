"""clipseg, grounded-sam and vlm-grounded-sam end to end with tiny random models read back from disk."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from baselines_support import run_cli, small_release, tiny_weights

from reasonseg.baselines.clipseg import calibration_path, choose_threshold
from reasonseg.baselines.predict import RunContext, predict_samples, run_to_file
from reasonseg.baselines.registry import get_method
from reasonseg.baselines.vlm_grounded_sam import clean_phrase
from reasonseg.dataset import annotations_fingerprint, load_split
from reasonseg.errors import MethodError
from reasonseg.metrics.scoring import evaluate


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return small_release(tmp_path_factory.mktemp("models") / "release")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_choose_threshold_maximises_giou_and_prefers_the_lower_on_ties():
    target = np.zeros((4, 4), bool)
    target[:2] = True
    probs = np.where(target, 0.62, 0.3)
    ignore = np.zeros_like(target)
    t, curve = choose_threshold([probs], [target], [ignore], grid=(0.2, 0.4, 0.6, 0.7))
    values = dict(curve)
    assert t == 0.4                                      # 0.4 and 0.6 are both exact; the lower wins
    assert values[0.4] == values[0.6] == pytest.approx(1.0, abs=1e-4)
    assert values[0.2] == pytest.approx(0.5, abs=1e-4)   # everything: 8 of 16 pixels right
    assert values[0.7] == 0.0                            # nothing, against a non-empty target


def test_clipseg_threshold_is_chosen_on_val_stored_and_reused(release, tmp_path, cache):
    weights = tiny_weights()["clipseg"]
    out = run_to_file(get_method("clipseg").build(RunContext(release, weights)), load_split(release, "test"),
                      tmp_path / "cs.json", split="test", method_name="clipseg", batch_size=3).out
    meta = json.loads(out.read_text())["meta"]
    stored = calibration_path(weights, annotations_fingerprint(load_split(release, "val")))
    record = json.loads(stored.read_text())
    assert meta["threshold"] == record["threshold"] and meta["threshold_source"]["chosen_on"] == "val"
    assert record["val_queries"] == 4 and len(record["curve"]) == 19
    assert evaluate(release, out, "test", bootstrap=0, cache_dir=None).document["groups"]["overall"]["n"] == 4
    # A later run reads the stored threshold instead of recalibrating.
    record["threshold"] = 0.35
    stored.write_text(json.dumps(record))
    method = get_method("clipseg").build(RunContext(release, weights))
    assert method.threshold == 0.35
    # An explicit threshold wins; the mask is the probability map cut there.
    low = get_method("clipseg").build(RunContext(release, weights, options={"threshold": "0.0"}))
    sample = load_split(release, "test")[0]
    assert low.predict(sample, sample.queries()[0]).mask.all()


def test_clipseg_without_val_and_threshold_says_what_to_pass(tmp_path, cache):
    release = small_release(tmp_path / "r", counts={"test": 2})
    with pytest.raises(MethodError, match="--set threshold="):
        get_method("clipseg").build(RunContext(release, tiny_weights()["clipseg"]))


def test_grounded_sam_scores_batches_agree_and_reuses_the_image_embedding(release, tmp_path):
    weights = tiny_weights()
    ctx = RunContext(release, None, "cpu", {"dino": weights["dino"], "sam": weights["sam"]})
    val = load_split(release, "val")
    out = run_to_file(get_method("grounded-sam").build(ctx), val, tmp_path / "gs.json", split="val",
                      method_name="grounded-sam", batch_size=3).out
    doc = json.loads(out.read_text())
    assert all(p["info"]["detector_text"].endswith(".") and len(p["info"]["box"]) == 4
               for p in doc["predictions"])
    assert doc["meta"]["weights"] == {"dino": str(weights["dino"]), "sam": str(weights["sam"])}
    assert evaluate(release, out, "val", bootstrap=0, cache_dir=None).document["groups"]["overall"]["n"] == 4

    samples = load_split(release, "test")
    method = get_method("grounded-sam").build(ctx)
    one = predict_samples(method, samples, "all-texts", batch_size=1)
    assert method.segmenter.encoder_runs == len(samples) < len(one)   # one encoder run per image
    method.segmenter.encoder_runs = 0
    many = predict_samples(method, samples, "all-texts", batch_size=8)
    assert [p.rle for p in one] == [p.rle for p in many]
    no_reuse = get_method("grounded-sam").build(RunContext(release, None, "cpu", ctx.weight_paths,
                                                           {"reuse_embedding": "false"}))
    assert [p.rle for p in predict_samples(no_reuse, samples, "all-texts")] == [p.rle for p in one]
    assert no_reuse.segmenter.encoder_runs == len(one)


def test_clean_phrase():
    assert clean_phrase('Answer: "the red apple".\nBecause it is red.') == "the red apple"
    assert clean_phrase("\n\n  a   spoon ") == "a spoon"
    assert clean_phrase("") == ""


def test_vlm_grounded_sam_with_a_transformers_vlm_records_the_phrase(release, tmp_path):
    weights = tiny_weights()
    out = tmp_path / "vg.json"
    proc = run_cli("predict", "--method", "vlm-grounded-sam", str(release), "--split", "val", "--out", str(out),
                   "--weights", str(weights["vlm"]), "--weights", f"dino={weights['dino']}",
                   "--weights", f"sam={weights['sam']}", "--batch-size", "2", "--set", "max_new_tokens=6")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["meta"]["vlm"] == str(weights["vlm"])
    for p in doc["predictions"]:
        info = p["info"]
        assert "phrase" in info and info["phrase"] == clean_phrase(info["vlm_answer"])
        assert info["detector_text"].rstrip(".") == (info["phrase"] or "").lower().rstrip(" .") or not info["phrase"]
    assert evaluate(release, out, "val", bootstrap=0, cache_dir=None).document["groups"]["overall"]["n"] == 4


class _ChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat-completions endpoint: answers every request with a fixed phrase."""

    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        answer = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "Answer: the blue star.\nIt is."}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_vlm_grounded_sam_with_an_openai_compatible_endpoint(release, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        weights = tiny_weights()
        ctx = RunContext(release, None, "cpu", {"dino": weights["dino"], "sam": weights["sam"]},
                         {"vlm_base_url": f"http://127.0.0.1:{server.server_port}/v1", "vlm_model": "tiny"})
        samples = load_split(release, "val")
        out = run_to_file(get_method("vlm-grounded-sam").build(ctx), samples, tmp_path / "p.json", split="val",
                          method_name="vlm-grounded-sam", batch_size=4).out
    finally:
        server.shutdown()
    infos = [p["info"] for p in json.loads(out.read_text())["predictions"]]
    assert [i["phrase"] for i in infos] == ["the blue star"] * 4
    assert all(i["detector_text"] == "the blue star." for i in infos)
    path, body = _ChatServer.received[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny"
    content = body["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert samples[0].texts[0] in content[1]["text"]


def test_vlm_endpoint_failure_is_one_clear_error(release):
    weights = tiny_weights()
    ctx = RunContext(release, None, "cpu", {"dino": weights["dino"], "sam": weights["sam"]},
                     {"vlm_base_url": "http://127.0.0.1:9/v1", "vlm_model": "m", "vlm_retries": "0"})
    method = get_method("vlm-grounded-sam").build(ctx)
    sample = load_split(release, "val")[0]
    with pytest.raises(MethodError) as caught:
        method.predict(sample, sample.queries()[0])
    assert "VLM endpoint failed" in str(caught.value) and "--vlm-base-url" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(MethodError, match="--vlm-model"):
        get_method("vlm-grounded-sam").build(RunContext(release, None, "cpu", ctx.weight_paths,
                                                        {"vlm_base_url": "http://127.0.0.1:9/v1"}))
