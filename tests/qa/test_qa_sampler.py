"""The reference's sampler (`LisaSampler`): group rates (chi-square), uniform dataset per attempt, 3 distinct targets,
the redraw rules (within the group, re-picking the dataset; empty part segmentations), ReasonSeg's per-draw texts and
explanatory choice, refer overlap sum/clip, pycocotools polygon decoding, seeding and resume, float rates."""
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from qa_testlib import build, gotcha_root

from reasonseg.builders.qa import LisaSampler, SamplerOptions, open_sources
from reasonseg.builders.qa.cocojson import segmentation_mask
from reasonseg.builders.qa.items import GROUPS, QASourceError
from reasonseg.errors import BuildError
from reasonseg.sample.qa_sources import write_qa_sources

CHI2_999 = {1: 10.83, 3: 16.27, 4: 18.47}   # chi-square critical values at p = 0.001, by degrees of freedom


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return write_qa_sources(gotcha_root(tmp_path_factory.mktemp("sampler")), seed=0, ade20k=6, reason_seg=6)


@pytest.fixture(scope="module")
def opened(sources):
    return open_sources(sources)


def _chi2(observed, expected_p):
    observed = np.asarray(observed, float)
    expected = observed.sum() * np.asarray(expected_p, float)
    return float(((observed - expected) ** 2 / expected).sum())


def _attempts(draws, names):
    """Every attempt picks a dataset: the draws' own sources plus each redraw's and skip's source."""
    counts = Counter(d.source.name for d in draws)
    counts.update(e[1] for d in draws for e in d.events)
    return [counts[n] for n in names]


def test_group_rates_uniform_datasets_and_three_distinct_targets(opened):
    draws = [LisaSampler(opened, seed=11).draw(k) for k in range(4000)]
    groups = [d.source.group for d in draws]
    observed = [groups.count(g) for g in GROUPS]
    assert _chi2(observed, np.array([9, 3, 3, 1]) / 16) < CHI2_999[3]
    assert _chi2(observed, [0.25] * 4) > 10 * CHI2_999[3]
    sem = [d for d in draws if d.source.group == "sem_seg"]
    names = ("ade20k", "cocostuff", "mapillary", "paco_lvis", "pascal_part")
    assert _chi2(_attempts(sem, names), [0.2] * 5) < CHI2_999[4]
    refer = [d for d in draws if d.source.group == "refer_seg"]
    assert _chi2(_attempts(refer, ("refclef", "refcoco", "refcoco+", "refcocog")), [0.25] * 4) < CHI2_999[3]
    for d in draws:
        if d.item.conversation is not None:
            assert d.targets == [] and d.mask_keys == []
            continue
        keys = [(t.name, t.mask_key, t.obj_part) for t in d.targets]
        assert len(d.targets) == min(3, len(d.item.targets))
        # Distinct targets; two Mapillary labels may share a readable name and so a (name, mask) pair.
        assert len(set(keys)) == len(keys) or d.source.name == "mapillary"
        assert all(k in [(t.name, t.mask_key, t.obj_part) for t in d.item.targets] for k in keys)
        if d.mask_keys:
            assert d.masks().shape == (len(d.mask_keys), d.item.height, d.item.width)
    # Every target subset of an item with more than 3 targets comes up (choice without replacement, at random).
    subsets: dict = {}
    for d in draws:
        if len(d.item.targets) > 3:
            subsets.setdefault((d.source.name, d.item.key), set()).add(frozenset((t.name, t.mask_key)
                                                                                  for t in d.targets))
    assert subsets and max(len(v) for v in subsets.values()) > 1


def test_float_rates_are_the_same_mix(opened):
    a = LisaSampler(opened, SamplerOptions(rates=(9, 3, 3, 1)), seed=5)
    b = LisaSampler(opened, SamplerOptions(rates=(0.5625, 0.1875, 0.1875, 0.0625)), seed=5)
    assert [a.draw(k).id for k in range(200)] == [b.draw(k).id for k in range(200)]
    c = LisaSampler(opened, SamplerOptions(rates=(0.0, 0.0, 0.5, 0.5)), seed=5)
    assert {c.draw(k).source.group for k in range(200)} == {"vqa", "reason_seg"}
    for bad in ((9, 3, 3), (1, -1, 1, 1), (0, 0, 0, 0), (float("nan"), 1, 1, 1), ("9", 3, 3, 1)):
        with pytest.raises(BuildError, match="rates"):
            LisaSampler(opened, SamplerOptions(rates=bad))
    with pytest.raises(BuildError, match="rate 0"):
        LisaSampler([s for s in opened if s.group == "vqa"], SamplerOptions(rates=(1, 1, 0, 1)))


def test_redraws_stay_in_the_group_and_re_pick_the_dataset(opened):
    sampler = LisaSampler(opened, seed=3)
    draws = [sampler.draw(k) for k in range(3000)]
    group_of = {s.name: s.group for s in opened}
    redrawn = [d for d in draws if any(e[0] == "redraw" for e in d.events)]
    assert redrawn
    for d in redrawn:
        assert {group_of[e[1]] for e in d.events} == {d.source.group}
    # An empty PACO segmentation is never a target: picking it starts the sample over, and the next attempt
    # chooses the dataset again (here: sometimes another one).
    paco_empty = [d for d in draws if any(e[1] == "paco_lvis" and e[3] == "empty segmentation" for e in d.events)]
    assert paco_empty and any(d.source.name != "paco_lvis" for d in paco_empty)
    assert not any(t.empty for d in draws for t in d.targets)
    # All-ignore label maps are never samples (ADE20K image 2, COCO-Stuff image 2, the Mapillary all-255 map).
    assert "ADE_train_00000002" not in {d.item.key for d in draws if d.source.name == "ade20k"}
    assert any(e[3] == "nothing to ask" for d in draws for e in d.events)


def test_draws_are_seeded_resumable_and_what_build_qa_writes(opened, sources, tmp_path):
    one, two = LisaSampler(opened, seed=9), LisaSampler(open_sources(sources), seed=9)
    whole = [one.draw(k).record() for k in range(60)]
    # A fresh sampler asked for indices 30.. (a resumed run) continues the same stream.
    assert [two.draw(k).record() for k in range(30, 60)] == whole[30:]
    assert [LisaSampler(opened, seed=10).draw(k).id for k in range(60)] != [r["id"] for r in whole]
    _, records = build(sources, tmp_path / "qa", mode="lisa", samples=60, seed=9, workers=2)
    assert records == whole


def test_reasonseg_draws_resample_texts_and_explanations(sources):
    root = sources["reason_seg"]
    (source,) = open_sources({"reason_seg": root})
    explained = {json.loads(json.dumps(e))["image"] for e in
                 json.loads((root / "explanatory" / "train.json").read_text())}
    sampler = LisaSampler([source], seed=1)
    draws = [sampler.draw(k) for k in range(3000)]
    with_expl = [d for d in draws if d.item.explanation is not None]
    assert with_expl and {f"{d.item.key}.jpg" for d in with_expl} <= explained
    kinds = Counter(d.fields["templates"][0][1] for d in with_expl)
    text_only = kinds["outputs"]
    n = len(with_expl)
    # text-only with probability 0.1; of the rest, half plain [SEG], half [SEG] + explanation (binomial z < 4)
    assert abs(text_only - 0.1 * n) < 4 * np.sqrt(n * 0.1 * 0.9)
    plus = sum(v for k, v in kinds.items() if k.endswith("+outputs"))
    assert abs(plus - (n - text_only) / 2) < 4 * np.sqrt((n - text_only) / 4)
    for d in with_expl:
        choice = d.fields["templates"][0][1]
        questions = [t["value"] for t in d.fields["conversations"][0::2]]
        if choice == "outputs":
            assert d.mask_keys == [] and len(d.masks()) == 0
            assert questions[0] == "<image>\n" + d.targets[0].name
        elif choice.endswith("+outputs"):
            assert questions[0].startswith("<image>\n" + d.targets[0].name + " Please output segmentation mask and")
    assert not any(d.fields["templates"][0][1] == "outputs" for d in draws if d.item.explanation is None)
    # Texts are re-sampled on every draw, without replacement.
    by_item = {}
    for d in draws:
        names = [t.name for t in d.targets]
        assert len(names) == len(set(names)) == min(3, len(d.item.targets))
        by_item.setdefault(d.item.key, set()).add(tuple(names))
    assert any(len(v) > 1 for k, v in by_item.items() if len(source.load(k).targets) > 1)
    # -1 turns explanations off.
    quiet = LisaSampler([source], SamplerOptions(explanatory=-1), seed=1)
    assert not any("outputs" in quiet.draw(k).fields["templates"][0][1] for k in range(300))


def test_reasonseg_train_val_reads_both_splits(tmp_path):
    from reasonseg.sample import write_sample_release

    root = write_sample_release(tmp_path / "rs", counts={"train": 3, "val": 2})
    (train,) = open_sources({"reason_seg": root})
    (both,) = open_sources({"reason_seg": root}, reasonseg_split="train_val")
    assert len(train.keys()) == 3 and len(both.keys()) == 5
    assert {both.load(k).image.split("/")[0] for k in both.keys()} == {"train", "val"}


def test_refer_overlap_sums_as_the_reference_or_clips(sources):
    from pycocotools import mask as cocomask

    instances = json.loads((sources["refer_seg"] / "refcoco" / "instances.json").read_text())
    ann = next(a for a in instances["annotations"] if len(a["segmentation"]) == 2)
    image = next(i for i in instances["images"] if i["id"] == ann["image_id"])
    h, w = image["height"], image["width"]
    # The reference's refer loader: frPyObjects, decode, sum over the parts, uint8.
    golden = np.sum(cocomask.decode(cocomask.frPyObjects(ann["segmentation"], h, w)), axis=2).astype(np.uint8)
    assert golden.max() == 2
    summed = open_sources({"refcoco": sources["refer_seg"]})[0].load(str(image["id"]))
    clipped = open_sources({"refcoco": sources["refer_seg"]}, refer_overlap="clip")[0].load(str(image["id"]))
    assert np.array_equal(summed.mask(ann["id"]), golden)
    assert np.array_equal(clipped.mask(ann["id"]), np.minimum(golden, 1))
    # A record's RLE holds 0/1 either way.
    assert summed.rle(ann["id"]) == clipped.rle(ann["id"])
    with pytest.raises(BuildError, match="refer overlap"):
        open_sources({"refcoco": sources["refer_seg"]}, refer_overlap="max")


def test_short_polygons_decode_as_pycocotools_does(tmp_path):
    from pycocotools import mask as cocomask

    h, w = 20, 24
    for polygons in ([[2, 2, 15, 3, 9, 14], [1, 1, 6, 1]],        # a 4-number part after a full polygon
                     [[2, 2, 15, 3, 9, 14, 5]],                    # odd count: the last number is dropped
                     [[3, 3, 12, 3, 12, 12, 3, 12], [5, 5]]):      # a 2-number part
        rles = cocomask.frPyObjects(polygons, h, w)
        golden = cocomask.decode(rles)
        assert np.array_equal(segmentation_mask(polygons, h, w, "t", tmp_path, "sum"),
                              golden.sum(axis=2).astype(np.uint8))
        assert np.array_equal(segmentation_mask(polygons, h, w, "t", tmp_path), (golden.max(axis=2) > 0))
    # What pycocotools cannot decode is a named error (the reference crashes, or redraws for part datasets).
    for bad in ([[1, 1, 5, 5]], [[2, 2]], [[1, "x", 3, 4, 5, 6]], [[1, float("nan"), 3, 4, 5, 6]],
                [[1, 1e12, 3, 4, 5, 6]]):
        with pytest.raises(QASourceError, match="segmentation|polygon") as info:
            segmentation_mask(bad, h, w, "refcoco/9", tmp_path)
        assert info.value.sample_id == "refcoco/9"


def test_build_qa_cli_takes_float_rates(sources, tmp_path):
    exe = [sys.executable, "-c", "from reasonseg.cli import main; main()"]
    args = ["build", "qa", "--source", f"ade20k={sources['ade20k']}", "--source", f"reason_seg={sources['reason_seg']}",
            "--mode", "lisa", "--samples", "40"]
    ok = subprocess.run([*exe, *args, "--out", str(tmp_path / "a"), "--rates", "0.5,0.2,0.2,0.1"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "a" / "build.json").read_text())["options"]["rates"] == [0.5, 0.2, 0.2, 0.1]
    for rates in ("9,3,x,1", "9,3,3", "-1,3,3,1"):
        bad = subprocess.run([*exe, *args, "--out", str(tmp_path / "b"), "--rates", rates], capture_output=True,
                             text=True)
        assert bad.returncode == 2 and "rates" in bad.stderr and "Traceback" not in bad.stderr
        assert not (tmp_path / "b" / "qa.jsonl").exists()
