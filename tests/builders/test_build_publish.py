"""Import of the public release, publishing to Parquet + card + Croissant, and the CLI of this stage."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

from reasonseg.builders.publish import PublishWarning, parquet_name, publish_release
from reasonseg.builders.release.importer import import_release
from reasonseg.dataset import load_split, validate_release
from reasonseg.errors import BuildError
from reasonseg.masks import rasterize_shapes
from reasonseg.sample import special_cases, write_sample_release
from reasonseg.schema import HUB_SPLIT_NAMES, SPLITS

pq = pytest.importorskip("pyarrow.parquet")

EXE = str(Path(sys.executable).with_name("reasonseg"))
COUNTS = {"train": 4, "val": 3, "test": 3}


def _env_without_hub_token() -> dict[str, str]:
    """This environment without a Hub token, and not offline (a push goes to the test's local Hub)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE")}


def run(*args, env=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)


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
    """The built sample release (OpenImages + ScanNet rows) and its published form."""
    from reasonseg.builders.release.build import demo_step

    root = tmp_path_factory.mktemp("publish")
    release = demo_step(root / "demo")
    with pytest.warns(PublishWarning, match="--exclude-source scannet"):
        publish_release(release, root / "hub", repo_id="someone/reasonseg")
    return release, root / "hub"


def _release_samples(release: Path) -> dict[str, dict[str, object]]:
    return {split: {s.id: s for s in load_split(release, split)} for split in SPLITS}


def test_load_dataset_on_the_folder_round_trips(published, tmp_path, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    release, hub = published
    ds = load_dataset(str(hub))
    assert set(ds) == {"train", "validation", "test"}
    for split, samples in _release_samples(release).items():
        rows = ds[HUB_SPLIT_NAMES[split]]
        assert sorted(rows["id"]) == sorted(samples)
        for row in rows:
            s = samples[row["id"]]
            gt = row["ground_truth"]
            assert gt.mode == "P"  # a palette PNG: values 0/1/255, shown black/white/grey
            assert np.array_equal(np.array(gt), rasterize_shapes(s.shapes, s.height, s.width))
            assert row["texts"] == list(s.texts) and row["is_sentence"] == s.is_sentence
            assert row["image"].size == (s.width, s.height)
            assert [(sh["label"], [tuple(p) for p in sh["points"]]) for sh in row["shapes"]] == \
                [(sh.label, list(sh.points)) for sh in s.shapes]
            assert row["annotation"] == s.json_path.read_bytes()
            assert row["source_dataset"] in ("openimages", "scannet")
    assert any(255 in np.array(r["ground_truth"]) for split in ds for r in ds[split])  # ignore survives
    features = ds["validation"].features
    card = (hub / "README.md").read_text()
    for name in features:  # every feature is documented in the card
        assert f"| `{name}` |" in card, name
    assert type(features["shapes"]).__name__ == "List" and set(features["shapes"].feature) == {"label", "points"}


def test_ground_truth_palette_shows_each_value(published):
    from PIL import Image

    _, hub = published
    table = pq.read_table(hub / parquet_name("val"), columns=["ground_truth"]).to_pylist()
    with Image.open(io.BytesIO(table[0]["ground_truth"]["bytes"])) as img:
        palette = img.getpalette()
    colours = {v: tuple(palette[3 * v:3 * v + 3]) for v in (0, 1, 255)}
    assert len(set(colours.values())) == 3 and colours[0] == (0, 0, 0)
    assert min(sum(c) for v, c in colours.items() if v) >= 300  # target and ignore are visible on black


def test_image_bytes_are_the_release_files(published):
    release, hub = published
    for split in SPLITS:
        for row in pq.read_table(hub / parquet_name(split), columns=["id", "image"]).to_pylist():
            assert row["image"]["bytes"] == (release / split / row["image"]["path"]).read_bytes()


def test_croissant_loads_every_row_with_mlcroissant(published):
    import mlcroissant as mlc

    release, hub = published
    dataset = mlc.Dataset(jsonld=str(hub / "croissant.json"))
    assert not dataset.metadata.ctx.issues.errors and not dataset.metadata.ctx.issues.warnings
    samples = _release_samples(release)
    for split in SPLITS:
        name = HUB_SPLIT_NAMES[split]
        records = list(dataset.records(record_set=name))
        assert len(records) == len(samples[split]), split
        assert sorted(r[f"{name}/id"].decode() for r in records) == sorted(samples[split])
        record = records[0]
        s = samples[split][record[f"{name}/id"].decode()]
        image = record[f"{name}/image"]
        assert image.fp.getvalue() == s.image_path.read_bytes()  # the image's bytes, as the release has them
        assert np.array_equal(np.asarray(image), np.asarray(__import__("PIL.Image").Image.open(s.image_path)))
        assert np.array_equal(np.asarray(record[f"{name}/ground_truth"]),
                              rasterize_shapes(s.shapes, s.height, s.width))
        assert [t.decode() for t in record[f"{name}/texts"]] == list(s.texts)
        shapes = record[f"{name}/shapes"]
        assert [sh[f"{name}/shapes/label"].decode() for sh in shapes] == [sh.label for sh in s.shapes]
        assert [[tuple(p) for p in sh[f"{name}/shapes/points"]] for sh in shapes] == [list(sh.points)
                                                                                    for sh in s.shapes]
    doc = dataset.metadata.to_json()
    assert doc["url"] == "https://huggingface.co/datasets/someone/reasonseg"
    assert doc["datePublished"] and "LISA" in doc["citeAs"]
    licences = doc["license"] if isinstance(doc["license"], list) else [doc["license"]]
    assert "https://creativecommons.org/licenses/by/4.0/" in licences
    assert any("ScanNet_TOS" in url for url in licences)


def test_one_licence_story_from_the_sources(published):
    release, hub = published
    manifest = json.loads((hub / "manifest.json").read_text())
    card = (hub / "README.md").read_text()
    croissant = json.loads((hub / "croissant.json").read_text())
    rows = {"openimages": 0, "scannet": 0}
    for samples in _release_samples(release).values():
        for s in samples.values():
            rows[s.source] += 1
    assert set(manifest["sources"]) == set(rows)
    for source, title in (("openimages", "OpenImages"), ("scannet", "ScanNet v2")):
        assert f"**{title}** (`source_dataset == \"{source}\"`, {rows[source]} rows)" in card
        assert f"{title} ({rows[source]} rows)" in croissant["description"]
    assert "Redistribution is not allowed" in card
    assert "license: other" in card.split("---")[1]


def test_card_numbers_come_from_the_build(tmp_path):
    """A release with an empty ground truth says so; one without says none; the counts are the build's."""
    counts = {"train": 2, "val": 2, "test": 3}
    release = write_sample_release(tmp_path / "rel", counts=counts)
    info = publish_release(release, tmp_path / "hub")
    card = (tmp_path / "hub" / "README.md").read_text()
    empty = sum(s["empty_gt"] for s in info["splits"].values())
    assert empty == len(special_cases(counts=counts)["empty_shapes"]) == 1
    assert "1 row(s) have an empty ground truth" in card and "two test images" not in card
    for split, n in counts.items():
        samples = load_split(release, split)
        short = sum(not s.is_sentence for s in samples)
        assert f"| {HUB_SPLIT_NAMES[split]} ({split}/) | {n} | {short} | {n - short} |" in card
    assert "source not recorded" in card  # the public layout records no source

    from reasonseg.builders.release.build import demo_step

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        publish_release(demo_step(tmp_path / "demo"), tmp_path / "built")
    assert "Every row has at least one target pixel." in (tmp_path / "built" / "README.md").read_text()


def test_exclude_source_leaves_the_rows_out_and_says_so(tmp_path):
    from reasonseg.builders.release.build import demo_step
    from reasonseg.published import export_release

    release = demo_step(tmp_path / "demo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no redistribution warning once ScanNet is left out
        info = publish_release(release, tmp_path / "hub", exclude_sources=("scannet",))
    hub = tmp_path / "hub"
    kept = {split: [s for s in load_split(release, split) if s.source != "scannet"] for split in SPLITS}
    for split in SPLITS:
        ids = pq.read_table(hub / parquet_name(split), columns=["id", "source_dataset"]).to_pylist()
        assert sorted(r["id"] for r in ids) == sorted(s.id for s in kept[split])
    card = (hub / "README.md").read_text()
    assert "leaves out the rows from scannet" in card
    n_test = len(load_split(release, "test"))
    assert f"- test: {n_test} in the release, {len(kept['test'])} published" in card
    assert "ScanNet" not in card.split("## Licences")[1]
    manifest = json.loads((hub / "manifest.json").read_text())
    assert set(manifest["sources"]) == {"openimages"}
    assert manifest["splits"]["test"]["count"] == len(kept["test"])
    assert [e["source"] for e in info["licences"]] == ["openimages"]
    export_release(hub, tmp_path / "back")  # the restricted manifest describes exactly the published files
    report = validate_release(tmp_path / "back")
    assert report.ok and not [f for f in report.findings if "manifest" in f.message]

    with pytest.raises(BuildError, match="no row comes from it"):
        publish_release(release, tmp_path / "hub2", exclude_sources=("coco",))
    assert not (tmp_path / "hub2").exists()


def test_publish_is_byte_identical_on_rerun(published, tmp_path):
    release, hub = published
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        publish_release(release, tmp_path / "again", repo_id="someone/reasonseg")
    for p in sorted(hub.rglob("*")):
        if p.is_file():
            assert (tmp_path / "again" / p.relative_to(hub)).read_bytes() == p.read_bytes(), p.name


def test_push_token_comes_from_hf_auth_login(published, tmp_path):
    """`--push` uses the token `hf auth login` stored (no HF_TOKEN): a real HTTP server on 127.0.0.1 standing in
    for the Hub sees it in the Authorization header."""
    import http.server
    import threading

    seen: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "refused by the test server"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    release, _ = published
    env = _env_without_hub_token()
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
               HF_HUB_DISABLE_TELEMETRY="1")
    try:
        proc = run("publish", release, "--out", tmp_path / "hub", "--repo-id", "me/rs", "--push", env=env)
        assert_one_line_error(proc, "hf auth login", "HF_TOKEN")
        assert not (tmp_path / "hub").exists() and not seen
        (tmp_path / "hf").mkdir()
        (tmp_path / "hf" / "token").write_text("hf_stored_by_login")  # where `hf auth login` keeps it
        proc = run("publish", release, "--out", tmp_path / "hub", "--repo-id", "me/rs", "--push", env=env)
    finally:
        server.shutdown()
    assert proc.returncode == 2 and "upload to me/rs failed" in proc.stderr, proc.stderr
    assert "--exclude-source scannet" in proc.stderr  # the redistribution warning comes before the upload
    assert seen and seen[0] == "Bearer hf_stored_by_login", proc.stderr


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
    assert_one_line_error(again, "not empty", "--overwrite")

    bad = tmp_path / "bad.jsonl"
    lines = manifest.read_text().splitlines()
    bad.write_text("\n".join([lines[0], '{"source": "coco", "texts": ["x"]}', lines[1]]) + "\n")
    proc = run("build", "reasonseg", "--openimages", oi, "--manifest", bad, "--out", tmp_path / "bad")
    assert_one_line_error(proc, "line 2", "unknown source", "--keep-going")
    assert not (tmp_path / "bad").exists()
    proc = run("build", "reasonseg", "--openimages", oi, "--manifest", bad, "--out", tmp_path / "bad",
               "--keep-going")
    assert proc.returncode == 1 and "line 2" in proc.stdout
    assert validate_release(tmp_path / "bad").ok

    env = _env_without_hub_token()
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no token stored by `hf auth login` either
    proc = run("publish", tmp_path / "rel", "--out", tmp_path / "hub", "--repo-id", "me/rs", "--push", env=env)
    assert_one_line_error(proc, "HF_TOKEN")
    assert not (tmp_path / "hub").exists()
    proc = run("publish", tmp_path / "rel", "--out", tmp_path / "hub")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "hub" / "croissant.json").is_file()
    assert proc.stderr.count("warning:") == 1 and "--exclude-source scannet" in proc.stderr
    proc = run("publish", tmp_path / "rel", "--out", tmp_path / "hub-oi", "--exclude-source", "scannet")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    assert "left out: scannet" in proc.stdout
    assert_one_line_error(run("publish", tmp_path / "rel", "--out", tmp_path / "hub-x", "--exclude-source", "coco"),
                          "--exclude-source 'coco'", "no row comes from it")

    proc = run("build", "reasonseg", "--from-release", tmp_path / "rel", "--out", tmp_path / "imported")
    assert proc.returncode == 0, proc.stderr
    assert validate_release(tmp_path / "imported").ok


def test_cli_help_has_examples():
    for args in (("build", "reasonseg", "--help"), ("build", "candidates", "--help"), ("publish", "--help"),
                 ("export-release", "--help")):
        proc = run(*args)
        assert proc.returncode == 0 and "Example:" in proc.stdout, args
