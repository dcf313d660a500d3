"""Oracles and the SAM checkpoint reader: constructed cases where the ceiling is reached exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from baselines_support import rewrite_shapes, run_cli, run_polygons, small_release, tiny_weights

from reasonseg.baselines.grounded_sam import load_sam, sam_from_state_dict
from reasonseg.baselines.oracles import lisa_iou, target_and_ignore, target_box
from reasonseg.baselines.predict import RunContext, read_rgb, run_to_file
from reasonseg.baselines.registry import get_method
from reasonseg.baselines.weights import tiny_sam
from reasonseg.dataset import load_split
from reasonseg.masks import rasterize_shapes
from reasonseg.metrics.scoring import evaluate

AUTOMATIC = {"points_per_side": "4", "pred_iou_thresh": "0", "stability_score_thresh": "0"}


def test_sam_checkpoint_reads_back_with_the_same_architecture_and_outputs():
    path = tiny_weights()["sam"]
    original = tiny_sam()
    loaded = load_sam(path)
    enc = loaded.image_encoder
    assert enc.img_size == 64 and len(enc.blocks) == 2 and enc.blocks[1].window_size == 0
    assert enc.blocks[0].window_size == 4 and enc.blocks[0].attn.num_heads == 2
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(original.image_encoder(image), loaded.image_encoder(image))
    # The published vit_b layout is recognised from its state dict alone.
    from segment_anything import sam_model_registry

    vit_b = sam_model_registry["vit_b"]().state_dict()
    rebuilt = sam_from_state_dict(vit_b)
    assert rebuilt.image_encoder.blocks[2].window_size == 0 and rebuilt.image_encoder.blocks[0].window_size == 14
    assert rebuilt.image_encoder.blocks[0].attn.num_heads == 12
    rebuilt.load_state_dict(vit_b)  # strict: every tensor has the shape the builder made


def test_target_box_covers_pixel_extents():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert target_box(mask) == [3.0, 2.0, 9.0, 5.0]
    assert target_box(np.zeros((4, 4), bool)) is None


def _covering_sam(path):
    """SAM whose mask decoder answers every prompt with positive logits everywhere: it can only draw the full
    frame, so ground truth that is exactly the full frame is what this SAM represents exactly."""
    sam = tiny_sam()
    with torch.no_grad():
        last_up = sam.mask_decoder.output_upscaling[3]
        last_up.weight.zero_()
        last_up.bias.fill_(1.0)
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.fill_(1.0)
    torch.save(sam.state_dict(), path)
    return path


def test_oracle_box_sam_reaches_one_where_sam_represents_the_ground_truth(tmp_path):
    release = small_release(tmp_path / "release", counts={"val": 3})
    samples = load_split(release, "val")
    full, empty, other = samples
    rewrite_shapes(release, "val", full.id, [{"label": "target", "points": [
        [0, 0], [full.width - 1, 0], [full.width - 1, full.height - 1], [0, full.height - 1]]}])
    rewrite_shapes(release, "val", empty.id, [])
    sam = _covering_sam(tmp_path / "sam_covering.pth")
    out = tmp_path / "oracle.json"
    proc = run_cli("predict", "--method", "oracle-box-sam", str(release), "--split", "val", "--out", str(out),
                   "--weights", f"sam={sam}")
    assert proc.returncode == 0, proc.stderr
    assert "[oracle" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["meta"]["oracle"] is True and "ground-truth" in doc["meta"]["reads"]
    scores = {q["id"]: q["iou"] for q in evaluate(release, out, "val", bootstrap=0, cache_dir=None).document["queries"]}
    assert scores[full.id] == pytest.approx(1.0, abs=1e-4)
    assert scores[empty.id] == 1.0                  # empty target: the oracle answers empty
    assert scores[other.id] < 0.9                   # a small target is not the full frame
    # The random tiny SAM does not draw the full frame: the 1.0 above comes from the checkpoint read back.
    random_method = get_method("oracle-box-sam").build(RunContext(release, tiny_weights()["sam"]))
    random_out = run_to_file(random_method, load_split(release, "val"), tmp_path / "random.json", split="val",
                             method_name="oracle-box-sam").out
    random_scores = evaluate(release, random_out, "val", bootstrap=0, cache_dir=None).document["queries"]
    assert [q["iou"] for q in random_scores if q["id"] == full.id][0] < 0.999


def test_oracle_sam_best_reaches_one_on_a_proposal_and_picks_the_best_elsewhere(tmp_path):
    from segment_anything import SamAutomaticMaskGenerator

    release = small_release(tmp_path / "release", counts={"val": 3})
    samples = load_split(release, "val")
    sam = load_sam(tiny_weights()["sam"])
    generator = SamAutomaticMaskGenerator(sam, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    proposals = [m["segmentation"] for m in generator.generate(read_rgb(samples[0]))]
    assert proposals
    chosen = max(proposals, key=lambda m: m.sum())
    shapes = run_polygons(chosen)
    rewrite_shapes(release, "val", samples[0].id, shapes)
    sample = load_split(release, "val")[0]
    assert np.array_equal(rasterize_shapes(sample.shapes, sample.height, sample.width) == 1, chosen)

    info = get_method("oracle-sam-best")
    ctx = RunContext(release, None, "cpu", {"sam": tiny_weights()["sam"]}, dict(AUTOMATIC))
    out = run_to_file(info.build(ctx), load_split(release, "val"), tmp_path / "best.json", split="val",
                      method_name="oracle-sam-best").out
    scores = evaluate(release, out, "val", bootstrap=0, cache_dir=None).document["queries"]
    assert scores[0]["iou"] == pytest.approx(1.0, abs=1e-6)
    infos = [p["info"] for p in json.loads(out.read_text())["predictions"]]
    for s, q, i in zip(load_split(release, "val")[1:], scores[1:], infos[1:], strict=True):
        target, ignore = target_and_ignore(s)
        own = [m["segmentation"] for m in generator.generate(read_rgb(s))]
        assert q["iou"] == pytest.approx(max(lisa_iou(m, target, ignore) for m in own), abs=1e-6)
        assert i["best_iou"] == pytest.approx(q["iou"], abs=1e-5)
