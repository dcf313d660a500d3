"""Mapillary Vistas v2.0 reader: readable names lower-cased, indexed PNGs read as indices, 255 left out, the
reference's first-index mask for a shared name, bad files named; in `build qa` (CLI) and in the sampler."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from qa_testlib import build, gotcha_root

from reasonseg.builders.qa import LisaSampler, SamplerOptions, open_sources
from reasonseg.builders.qa.items import QASourceError
from reasonseg.masks import decode_rle
from reasonseg.sample.qa_sources import MAPILLARY_LABELS, write_mapillary


@pytest.fixture(scope="module")
def mapillary(tmp_path_factory):
    return write_mapillary(gotcha_root(tmp_path_factory.mktemp("mpl")) / "mapillary", seed=0)


def _labels(root):
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((root / "training" / "v2.0" / "labels").glob("*.png"))}


def test_targets_names_and_masks_follow_the_reference(mapillary):
    (source,) = open_sources({"mapillary": mapillary})
    labels = _labels(mapillary)
    assert Image.open(next(iter((mapillary / "training" / "v2.0" / "labels").glob("*.png")))).mode == "P"
    names = [r.lower() for r, _, _ in MAPILLARY_LABELS]
    for stem in source.keys():
        item = source.load(stem)
        label = labels[stem]
        present = [int(v) for v in np.unique(label) if v != 255]
        assert [t.name for t in item.targets] == [names[v] for v in present]
        assert (mapillary / "training" / "images" / f"{stem}.jpg").is_file()
        for t in item.targets:
            first = names.index(t.name)
            assert np.array_equal(item.mask(t.mask_key), (label == first).astype(np.uint8))
    first_stem = source.keys()[0]
    item = source.load(first_stem)
    # Both "Pole" labels (6 and 8) are asked, each for label 6's pixels; Mapillary's own Unlabeled is asked too.
    assert [t.name for t in item.targets].count("pole") == 2 and "unlabeled" in [t.name for t in item.targets]
    assert {t.mask_key for t in item.targets if t.name == "pole"} == {6}
    assert item.ignore is not None and item.ignore.sum() == (labels[first_stem] == 255).sum()


def test_build_qa_cli_and_sampler_read_mapillary(mapillary, tmp_path):
    out = tmp_path / "qa"
    exe = [sys.executable, "-c", "from reasonseg.cli import main; main()"]
    proc = subprocess.run([*exe, "build", "qa", "--source", f"mapillary={mapillary}", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    log = json.loads((out / "build.json").read_text())
    assert log["empty_items"] == {"mapillary": 1} and {r["source"] for r in records} == {"mapillary"}
    labels = _labels(mapillary)
    for rec in records:
        stem = rec["id"].split("/")[1]
        for name, rle in zip(rec["targets"], rec["masks"], strict=True):
            value = [r.lower() for r, _, _ in MAPILLARY_LABELS].index(name)
            assert np.array_equal(decode_rle(rle), (labels[stem] == value).astype(np.uint8))
    sampler = LisaSampler(open_sources({"mapillary": mapillary}), SamplerOptions(), seed=0)
    draws = [sampler.draw(k) for k in range(40)]
    assert all(d.source.name == "mapillary" and 1 <= len(d.targets) <= 3 for d in draws)
    # The all-255 map is never a sample: the draw starts over.
    empty = [stem for stem, label in labels.items() if (label == 255).all()]
    assert len(empty) == 1 and all(d.item.key != empty[0] for d in draws)
    assert any(e[0] == "redraw" and e[2] == empty[0] for d in draws for e in d.events)


def test_bad_mapillary_files_are_named(mapillary, tmp_path):
    import shutil

    broken = tmp_path / "mapillary"
    shutil.copytree(mapillary, broken)
    config = broken / "config_v2.0.json"
    doc = json.loads(config.read_text())
    doc["labels"] = doc["labels"][:5]
    config.write_text(json.dumps(doc))
    (source,) = open_sources({"mapillary": broken})
    with pytest.raises(QASourceError, match="out of range") as info:
        for stem in source.keys():
            source.load(stem)
    assert info.value.sample_id.startswith("mapillary/")
    doc["labels"][2] = {"name": "x"}
    config.write_text(json.dumps(doc))
    with pytest.raises(QASourceError, match=r"label 2 has no 'readable'"):
        open_sources({"mapillary": broken})
    config.write_text("{not json")
    with pytest.raises(QASourceError, match="not valid JSON"):
        open_sources({"mapillary": broken})
    config.unlink()
    with pytest.raises(QASourceError, match="not found"):
        open_sources({"mapillary": broken})
    _, records = build({"mapillary": mapillary}, tmp_path / "ok")
    assert records
