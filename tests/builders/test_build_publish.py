"""Import of the public release, publishing to Parquet + card + Croissant, and the CLI of this stage."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reasonseg.builders.release.importer import import_release
from reasonseg.builders.publish import publish_release
from reasonseg.dataset import load_split, validate_release
from reasonseg.errors import BuildError
from reasonseg.masks import rasterize_shapes
from reasonseg.sample import special_cases, write_sample_release
from reasonseg.schema import SPLITS

EXE = str(Path(sys.executable).with_name("reasonseg"))
COUNTS = {"train": 4, "val": 3, "test": 3}


def run(*args, env=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)


def one_line_error(proc, *parts):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> Path:
    """A release in the public layout with its defects: a cp1252 JSON, a shape-less JSON, a .JPG, an orphan."""
    root = write_sample_release(tmp_path_factory.mktemp("pub") / "ReasonSeg", counts=COUNTS)
    train = sorted((root / "train").glob("*.jpg"))
    train[-1].rename(train[-1].with_suffix(".JPG"))
    (root / "val" / "orphan.json").write_text('{"text": ["x"], "is_sentence": false, "shapes": []}')
    return root


def _gt(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        for s in load_split(root, split):
            out[f"{split}/{s.id}"] = rasterize_shapes(s.shapes, s.height, s.width)
    return out


def test_import_normalizes_without_changing_ground_truth(public, tmp_path):
    import warnings

    result = import_release(public, tmp_path / "imported")
    out = result.out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = _gt(public)
    after = _gt(out)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    kinds = {d["kind"] for d in result.report["defects"]}
    assert {"cp1252", "no shapes", "suffix", "orphan annotation"} <= kinds
    for p in out.rglob("*.json"):
        p.read_bytes().decode("utf-8")  # every file is UTF-8 now
    cp1252 = special_cases(counts=COUNTS)["cp1252"][0]
    doc = json.loads((out / cp1252[0] / f"{cp1252[1]}.json").read_text(encoding="utf-8"))
    assert "naïve" in doc["text"][0]
    report = validate_release(out, strict=True)
    assert not [f for f in report.findings if f.level == "error"]
    assert not any("cp1252" in f.message for f in report.findings)
    for split in SPLITS:
        for image in (public / split).iterdir():
            if image.suffix.lower() == ".jpg":
                assert (out / split / f"{image.stem}.jpg").read_bytes() == image.read_bytes()


def test_import_refuses_a_folder_without_splits(tmp_path):
    with pytest.raises(BuildError, match="not a ReasonSeg release"):
        import_release(tmp_path, tmp_path / "out")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from reasonseg.builders.release.build import demo_step

    root = tmp_path_factory.mktemp("publish")
    release = demo_step(root / "demo")
    publish_release(release, root / "hub", repo_id="someone/reasonseg")
    return release, root / "hub"


def test_parquet_round_trip_is_bit_exact(published, tmp_path, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    release, hub = published
    files = {s: str(hub / "data" / f"{s}-00000-of-00001.parquet") for s in SPLITS}
    ds = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    for split in SPLITS:
        samples = {s.id: s for s in load_split(release, split)}
        assert sorted(ds[split]["id"]) == sorted(samples)
        for row in ds[split]:
            s = samples[row["id"]]
            gt = np.array(row["ground_truth"])
            assert np.array_equal(gt, rasterize_shapes(s.shapes, s.height, s.width))
            assert row["texts"] == list(s.texts) and row["is_sentence"] == s.is_sentence
            assert row["image"].size == (s.width, s.height)
            assert row["source_dataset"] in ("openimages", "scannet")
    assert any(255 in np.array(r["ground_truth"]) for split in SPLITS for r in ds[split])  # ignore survives


def test_image_bytes_are_the_release_jpegs(published):
    import pyarrow.parquet as pq

    release, hub = published
    for split in SPLITS:
        table = pq.read_table(hub / "data" / f"{split}-00000-of-00001.parquet").to_pylist()
        for row in table:
            assert row["image"]["bytes"] == (release / split / f"{row['id']}.jpg").read_bytes()


def test_card_and_croissant(published):
    _, hub = published
    card = (hub / "README.md").read_text()
    head = card.split("---")[1]
    for key in ("license:", "task_categories:", "size_categories:", "source_datasets:", "annotations_creators:",
                "configs:", "path: data/val-*.parquet"):
        assert key in head, key
    for section in ("## Motivation", "## Composition", "## Collection process", "## Uses", "## Limitations",
                    "## Licences"):
        assert section in card
    croissant = json.loads((hub / "croissant.json").read_text())
    assert croissant["@type"] == "sc:Dataset" and croissant["conformsTo"].startswith("http://mlcommons.org/croissant")
    objects = [d for d in croissant["distribution"] if d["@type"] == "cr:FileObject"]
    assert len(objects) == 3
    for d in objects:
        assert hashlib.sha256((hub / d["contentUrl"]).read_bytes()).hexdigest() == d["sha256"]
    fields = {f["name"] for f in croissant["recordSet"][0]["field"]}
    assert {"image", "ground_truth", "texts", "is_sentence", "source_license"} <= fields


def test_publish_is_byte_identical_on_rerun(published, tmp_path):
    release, hub = published
    publish_release(release, tmp_path / "again", repo_id="someone/reasonseg")
    for p in sorted(hub.rglob("*")):
        if p.is_file():
            assert (tmp_path / "again" / p.relative_to(hub)).read_bytes() == p.read_bytes(), p.name


# ------------------------------------------------------------------------------------------------- the CLI

def test_cli_build_publish_and_errors(tmp_path):
    from reasonseg.sample.bundle import write_build_sources

    oi, sn, manifest = write_build_sources(tmp_path / "src", scannet_size=(242, 324))
    proc = run("build", "reasonseg", "--openimages", oi, "--scannet", sn, "--manifest", manifest,
               "--out", tmp_path / "rel", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "pairs written" in proc.stdout and "cause: holes" in proc.stdout
    assert validate_release(tmp_path / "rel").ok

    again = run("build", "reasonseg", "--openimages", oi, "--scannet", sn, "--manifest", manifest,
                "--out", tmp_path / "rel")
    one_line_error(again, "not empty", "--overwrite")

    bad = tmp_path / "bad.jsonl"
    lines = manifest.read_text().splitlines()
    bad.write_text("\n".join([lines[0], '{"source": "coco", "texts": ["x"]}', lines[1]]) + "\n")
    proc = run("build", "reasonseg", "--openimages", oi, "--manifest", bad, "--out", tmp_path / "bad")
    one_line_error(proc, "line 2", "unknown source", "--keep-going")
    assert not (tmp_path / "bad").exists()
    proc = run("build", "reasonseg", "--openimages", oi, "--manifest", bad, "--out", tmp_path / "bad",
               "--keep-going")
    assert proc.returncode == 1 and "line 2" in proc.stdout
    assert validate_release(tmp_path / "bad").ok

    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    proc = run("publish", tmp_path / "rel", "--out", tmp_path / "hub", "--repo-id", "me/rs", "--push", env=env)
    one_line_error(proc, "HF_TOKEN")
    assert not (tmp_path / "hub").exists()
    proc = run("publish", tmp_path / "rel", "--out", tmp_path / "hub")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hub" / "croissant.json").is_file()

    proc = run("build", "reasonseg", "--from-release", tmp_path / "rel", "--out", tmp_path / "imported")
    assert proc.returncode == 0, proc.stderr
    assert validate_release(tmp_path / "imported").ok


def test_cli_help_has_examples():
    for args in (("build", "reasonseg", "--help"), ("build", "candidates", "--help"), ("publish", "--help")):
        proc = run(*args)
        assert proc.returncode == 0 and "Example:" in proc.stdout, args
