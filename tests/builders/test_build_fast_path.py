"""The fast, streaming build gives exactly what the naive build gives; its parts are exact on their own."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reasonseg.builders.release.build import build_release
from reasonseg.builders.release.naive import naive_build
from reasonseg.builders.release.openimages import OpenImagesLayout, decode_mask, decode_mask_pillow
from reasonseg.builders.release.polygons import FIDELITY_THRESHOLD, crop_box, polygonize
from reasonseg.builders.release.scannet import ScanNetLayout
from reasonseg.builders.release.streams import Spool, Streamed, write_json
from reasonseg.dataset import write_manifest
from reasonseg.sample.bundle import write_build_sources
from reasonseg.sample.openimages import write_manifest_jsonl


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    oi, sn, manifest = write_build_sources(root / "sources", scannet_size=(242, 324))
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    # Problems of every stage: a bad line (check), an unknown MaskPath (resolve), a value absent from the
    # frame (found only while running the pair).
    lines[1] = {**lines[1], "texts": []}
    oi_line = next(k for k, line in enumerate(lines) if line["source"] == "openimages" and k > 1)
    lines[oi_line] = {**lines[oi_line], "targets": ["missing.png"]}
    sn_line = next(k for k, line in enumerate(lines) if line["source"] == "scannet")
    lines[sn_line] = {**lines[sn_line], "targets": [{"label": 4000}]}
    bad = write_manifest_jsonl(root / "bad.jsonl", lines)
    return OpenImagesLayout(oi), ScanNetLayout(sn), manifest, bad


@pytest.mark.parametrize("workers", [1, 2])
def test_streaming_build_equals_the_naive_build_byte_for_byte(demo, tmp_path, workers):
    oi, sn, manifest, bad = demo
    for name, m in (("good", manifest), ("bad", bad)):
        naive = naive_build(m, tmp_path / f"naive-{name}", openimages=oi, scannet=sn, keep_going=True)
        fast = build_release(m, tmp_path / f"fast-{name}", openimages=oi, scannet=sn, keep_going=True,
                             workers=workers)
        assert _files(fast.out) == _files(tmp_path / f"naive-{name}")
        assert fast.summary["counts"] == naive["counts"]
    assert fast.summary["counts"]["problems"] == 3
    assert {p["field"] for p in fast.problems} >= {"texts", "targets"}


def test_streamed_manifest_is_what_write_manifest_writes(demo, tmp_path):
    oi, sn, manifest, _ = demo
    result = build_release(manifest, tmp_path / "rel", openimages=oi, scannet=sn)
    streamed = (result.out / "manifest.json").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(result.out, copy)
    (copy / "manifest.json").unlink()
    doc = json.loads(streamed)
    write_manifest(copy, name=doc["name"], version=doc["version"], sources=doc["sources"],
                   sample_sources=doc["sample_sources"])
    assert (copy / "manifest.json").read_bytes() == streamed


def _masks(seed: int, h: int = 70, w: int = 90) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    target = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cx, cy = int(rng.integers(-5, w + 5)), int(rng.integers(-5, h + 5))
        cv2.ellipse(target, (cx, cy), (int(rng.integers(3, 30)), int(rng.integers(3, 30))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if seed % 3 == 0:
        cv2.circle(target, (w // 2, h // 2), 4, 0, -1)  # a hole
    if seed % 4 == 1:
        target[h // 3, 2:w - 2] = 1  # a one-pixel-wide part
    if seed % 5 == 2:
        target[rng.integers(0, h), rng.integers(0, w)] = 1  # a speck
    ignore = None
    if seed % 2:
        ignore = np.zeros((h, w), bool)
        ignore[: h // 4, w // 2:] = True
        ignore &= target == 0
    return target.astype(bool), ignore


@pytest.mark.parametrize("seed", range(12))
def test_polygonize_on_the_crop_equals_the_whole_image(seed):
    target, ignore = _masks(seed)
    if not target.any():
        return
    h, w = target.shape
    whole = polygonize(target, ignore, diagnose_all=True)
    both = target | (ignore if ignore is not None else False)
    x0, y0, x1, y1 = crop_box(both)
    win = (slice(y0, y1), slice(x0, x1))
    cropped = polygonize(target[win], ignore[win] if ignore is not None else None, origin=(x0, y0),
                         image_size=(h, w), diagnose_all=True)
    assert cropped[0] == whole[0]
    assert cropped[1] == whole[1]
    fast = polygonize(target[win], ignore[win] if ignore is not None else None, origin=(x0, y0), image_size=(h, w))
    assert fast[0] == whole[0] and fast[1].iou == whole[1].iou
    if whole[1].iou < FIDELITY_THRESHOLD:
        assert fast[1] == whole[1]  # what the report shows is diagnosed alike


def test_fast_mask_decode_matches_pillow():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 256, (31, 47)).astype(np.uint8)
    images = [Image.fromarray(values > 127), Image.fromarray(values), Image.fromarray(values).convert("RGB"),
              Image.fromarray(values.astype(np.uint16) * 200), Image.fromarray(values).convert("P")]
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        assert np.array_equal(decode_mask(data, "m.png"), decode_mask_pillow(data, "m.png")), image.mode


def test_streamed_json_and_external_sort(tmp_path):
    spool = Spool(tmp_path, "items")
    rng = np.random.default_rng(0)
    items = [{"k": int(v), "n": i, "s": "é"} for i, v in enumerate(rng.integers(0, 5, 50))]
    for item in items:
        spool.add(item)
    assert list(spool.sorted(lambda x: x["k"], run_size=7)) == sorted(items, key=lambda x: x["k"])  # stable
    plain = {"a": [1, {"b": "ü"}], "empty": [], "list": items, "map": {f"{i:03d}": {"v": i} for i in range(3)}}
    for ascii_only in (True, False):
        doc = {"a": [1, {"b": "ü"}], "empty": Streamed(iter([])), "list": Streamed(spool),
               "map": Streamed(((f"{i:03d}", {"v": i}) for i in range(3)), mapping=True)}
        out = io.StringIO()
        write_json(out, doc, ensure_ascii=ascii_only)
        assert out.getvalue() == json.dumps(plain, indent=1, ensure_ascii=ascii_only)


def test_memory_does_not_grow_with_the_number_of_pairs(tmp_path):
    """Python heap peak of a build: 120 pairs may cost only a few ids per pair more than 20 pairs (holding
    records, manifest lines or re-read samples would cost kilobytes per pair)."""
    import tracemalloc

    from reasonseg.sample.openimages import manifest_lines, write_openimages_source

    peaks = {}
    for n in (20, 120):
        oi = write_openimages_source(tmp_path / f"oi{n}", seed=5, n_images=n)
        lines = [{**line, "targets": [t for t in line["targets"] if isinstance(t, str)]} for line in manifest_lines(oi)]
        manifest = write_manifest_jsonl(tmp_path / f"m{n}.jsonl", lines)
        build_release(manifest, tmp_path / f"warm{n}", openimages=OpenImagesLayout(oi))  # imports, caches
        tracemalloc.start()
        try:
            build_release(manifest, tmp_path / f"out{n}", openimages=OpenImagesLayout(oi))
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[120] - peaks[20] < 100 * 1500, peaks


def test_manifest_edited_during_the_build_is_an_error_and_nothing_is_written(demo, tmp_path):
    oi, sn, manifest, _ = demo
    copy = tmp_path / "m.jsonl"
    copy.write_bytes(manifest.read_bytes())

    def edit(_):
        with open(copy, "a", encoding="utf-8") as fh:
            fh.write("\n")

    from reasonseg.errors import BuildError

    with pytest.raises(BuildError, match="changed while the build"):
        build_release(copy, tmp_path / "out", openimages=oi, scannet=sn, progress=edit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
