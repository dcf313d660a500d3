"""Predictions files (docs/formats.md): each bad input is one SubmissionError naming file, sample and field."""
from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reasonseg.dataset import load_split
from reasonseg.errors import SubmissionError
from reasonseg.masks import encode_rle, intervals_area, mask_to_intervals
from reasonseg.metrics.groundtruth import build_ground_truth
from reasonseg.metrics.scoring import match_predictions, score_predictions
from reasonseg.submission import (
    Limits,
    png_name,
    prediction_from_mask,
    read_predictions,
    write_predictions,
)

_rng = np.random.default_rng(7)
MASKS = {
    ("a", 0): (_rng.random((6, 8)) > 0.5).astype(np.uint8),
    ("a", 1): (_rng.random((6, 8)) > 0.7).astype(np.uint8),
    ("b", 0): (_rng.random((5, 9)) > 0.4).astype(np.uint8),
}


# ------------------------------------------------------------------------------------------------- helpers

def expect_error(call, *parts: str) -> SubmissionError:
    """Run `call`, expect a SubmissionError whose one-line message holds every part."""
    with pytest.raises(SubmissionError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return info.value


DEFAULT_LIMITS = Limits()


def read_error(path: Path, *parts: str, limits: Limits = DEFAULT_LIMITS) -> SubmissionError:
    return expect_error(lambda: read_predictions(path, limits), str(path), *parts)


def entry(sample_id="a", text_index=0, mask=None) -> dict:
    return {"id": sample_id, "text_index": text_index,
            "mask": encode_rle(mask if mask is not None else MASKS[(sample_id, 0)])}


def document(predictions=None, **overrides) -> dict:
    doc = {"format": "reasonseg-predictions", "version": 1, "split": "val", "method": "test",
           "predictions": [entry()] if predictions is None else predictions}
    doc.update(overrides)
    return doc


def write_doc(tmp_path: Path, doc, name: str = "preds.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def write_png_folder(folder: Path, masks: dict, scale: int = 255) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for (sid, k), mask in masks.items():
        (folder / png_name(sid, k)).write_bytes(png_bytes(mask.astype(np.uint8) * scale))
    return folder


def write_zip(path: Path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            # A ZipInfo keeps the name exactly as given (no stripping of "/" or "..").
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def as_predictions(masks: dict) -> list:
    return [prediction_from_mask(sid, k, mask) for (sid, k), mask in masks.items()]


def assert_same_intervals(preds, masks: dict) -> None:
    assert set(preds.masks) == set(masks)
    for key, mask in masks.items():
        got = preds.masks[key]
        assert (got.height, got.width) == mask.shape
        expected = mask_to_intervals(mask)
        assert np.array_equal(got.intervals[0], expected[0]) and np.array_equal(got.intervals[1], expected[1])


# -------------------------------------------------------------------------------------------- JSON: errors

def test_not_json(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text('{"format": "reasonseg-predictions",\n "version": ', encoding="utf-8")
    exc = read_error(path, "not JSON", "line 2")
    assert exc.path == str(path)


def test_json_not_an_object(tmp_path):
    read_error(write_doc(tmp_path, [document()]), "expected a JSON object", "got list")


def test_wrong_format(tmp_path):
    exc = read_error(write_doc(tmp_path, document(format="coco-results")), "field 'format'", "'coco-results'")
    assert exc.field == "format"


def test_wrong_version(tmp_path):
    read_error(write_doc(tmp_path, document(version=2)), "field 'version'", "unsupported version 2")


def test_predictions_not_a_list(tmp_path):
    path = write_doc(tmp_path, document(predictions={"a": entry()}))
    read_error(path, "field 'predictions'", "must be a list")


def test_entry_not_an_object(tmp_path):
    read_error(write_doc(tmp_path, document(predictions=[entry(), ["a", 0]])), "field 'predictions[1]'",
               "must be an object")


@pytest.mark.parametrize("bad", [{"text_index": 0}, {"id": ""}, {"id": 12}, {"id": None}])
def test_missing_or_empty_id(tmp_path, bad):
    raw = {k: v for k, v in entry().items() if k != "id"} | bad
    path = write_doc(tmp_path, document(predictions=[raw]))
    read_error(path, "field 'predictions[0].id'", "non-empty string")


@pytest.mark.parametrize("text_index", [-1, True, "0", 1.0])
def test_bad_text_index(tmp_path, text_index):
    exc = read_error(write_doc(tmp_path, document(predictions=[entry(text_index=text_index)])),
                     "sample 'a'", "field 'predictions[0].text_index'", "non-negative integer")
    assert exc.sample_id == "a"


@pytest.mark.parametrize("mask", ["eNpjYGBgAAAABQAB", [[0, 1], [1, 0]], None])
def test_mask_not_an_object(tmp_path, mask):
    raw = entry() | {"mask": mask}
    read_error(write_doc(tmp_path, document(predictions=[raw])), "sample 'a'", "field 'predictions[0].mask'",
               "RLE object")


def _rle_with(change) -> dict:
    rle = encode_rle(MASKS[("a", 0)])
    return change(dict(rle))


@pytest.mark.parametrize("rle, detail", [
    (_rle_with(lambda r: r | {"size": [7, 8]}), "cover 48 pixels but size 7x8 has 56"),
    (_rle_with(lambda r: r | {"counts": r["counts"] + "!"}), "outside pycocotools' alphabet"),
    (_rle_with(lambda r: r | {"counts": r["counts"][:-1] + "~"}), "outside pycocotools' alphabet"),
    (_rle_with(lambda r: r | {"counts": r["counts"] + "P"}), "ends in the middle of a value"),
    (_rle_with(lambda r: {"counts": r["counts"]}), "'size' and 'counts'"),
    (_rle_with(lambda r: r | {"size": [6.0, 8]}), "non-negative integers"),
])
def test_malformed_rle(tmp_path, rle, detail):
    ok = entry("b")
    bad = {"id": "a", "mask": rle}
    exc = read_error(write_doc(tmp_path, document(predictions=[ok, bad])), "malformed RLE", detail,
                     "sample 'a'", "field 'predictions[1].mask'")
    assert exc.field == "predictions[1].mask"


def test_duplicate_query_in_json(tmp_path):
    first = entry()
    second = {"id": "a", "mask": encode_rle(MASKS[("a", 0)])}  # text_index defaults to 0
    read_error(write_doc(tmp_path, document(predictions=[first, entry("b"), second])), "sample 'a'",
               "duplicate prediction for text_index 0")


def test_same_id_other_text_index_is_not_a_duplicate(tmp_path):
    preds = read_predictions(write_doc(tmp_path, document(predictions=[entry(), entry("a", 1)])))
    assert set(preds.masks) == {("a", 0), ("a", 1)}


def test_empty_file(tmp_path):
    path = tmp_path / "preds.json"
    path.write_bytes(b"")
    read_error(path, "is empty")


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "preds.json"
    path.write_bytes(b'{"format": "reasonseg-predictions", "method": "caf\xe9\xff"}')
    read_error(path, "not UTF-8")


def test_file_over_the_size_limit(tmp_path):
    path = write_doc(tmp_path, document())
    read_error(path, "over the 10 byte limit", f"{path.stat().st_size} bytes",
               limits=Limits(max_file_bytes=10))


def test_missing_path(tmp_path):
    read_error(tmp_path / "nope.json", "not found")


# -------------------------------------------------------------------------------------- PNG folder: errors

def test_duplicate_via_png_folder(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(MASKS[("a", 0)] * 255))
    (folder / "a__0.png").write_bytes(png_bytes(MASKS[("a", 0)] * 255))
    read_error(folder, "sample 'a'", "duplicate prediction for text_index 0")


def test_png_folder_empty(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files do not count
    read_error(folder, "folder is empty")


def test_png_folder_unexpected_name(tmp_path):
    folder = write_png_folder(tmp_path / "pngs", {("a", 0): MASKS[("a", 0)]})
    (folder / "a.txt").write_text("notes")
    read_error(folder, "unexpected file 'a.txt'", "<id>.png")


def test_png_not_binary(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    values = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    (folder / "a.png").write_bytes(png_bytes(values))
    exc = expect_error(lambda: read_predictions(folder), str(folder / "a.png"), "sample 'a'",
                       "not binary: values 0, 1, 2")
    assert exc.sample_id == "a"


def test_png_with_colour(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1:3, 1:4] = (255, 0, 0)
    (folder / "b.png").write_bytes(png_bytes(rgb))
    expect_error(lambda: read_predictions(folder), str(folder / "b.png"), "sample 'b'", "has colour")


def test_grey_rgb_png_is_accepted(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    mask = MASKS[("a", 0)]
    (folder / "a.png").write_bytes(png_bytes(np.repeat(mask[..., None] * 255, 3, axis=2)))
    assert_same_intervals(read_predictions(folder), {("a", 0): mask})


def test_png_over_the_pixel_limit(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(np.zeros((20, 20), np.uint8)))
    expect_error(lambda: read_predictions(folder, Limits(max_png_pixels=100)), str(folder / "a.png"),
                 "sample 'a'", "20x20", "over the 100 pixel limit")


def test_png_file_over_the_size_limit(tmp_path):
    folder = write_png_folder(tmp_path / "pngs", {("a", 0): MASKS[("a", 0)]})
    expect_error(lambda: read_predictions(folder, Limits(max_file_bytes=10)), str(folder / "a.png"),
                 "sample 'a'", "over the 10 byte limit")


def test_png_that_does_not_decode(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    expect_error(lambda: read_predictions(folder), str(folder / "a.png"), "sample 'a'", "does not decode")


def test_jpeg_named_png_is_rejected(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    ok, data = cv2.imencode(".jpg", np.zeros((4, 4), np.uint8))
    (folder / "a.png").write_bytes(data.tobytes())
    expect_error(lambda: read_predictions(folder), str(folder / "a.png"), "not a PNG", "JPEG")


# ---------------------------------------------------------------------------------------------- zip: errors

@pytest.mark.parametrize("name", ["/etc/x.png", "../x.png", "preds/../../x.png", "C:/x.png"])
def test_zip_entry_with_unsafe_path(tmp_path, name):
    path = write_zip(tmp_path / "preds.zip", {"a.png": png_bytes(MASKS[("a", 0)] * 255),
                                              name: png_bytes(MASKS[("b", 0)] * 255)})
    assert name in zipfile.ZipFile(path).namelist()  # the crafted name survived writing
    read_error(path, repr(name), "absolute path or '..'")


def test_zip_bomb_declared_size(tmp_path):
    path = write_zip(tmp_path / "preds.zip", {"bomb.png": bytes(5_000_000)})
    assert path.stat().st_size < 100_000
    read_error(path, "decompresses to 5000000 bytes", "over the 1000000 byte limit",
               limits=Limits(max_uncompressed_bytes=1_000_000))


def test_zip_bomb_declared_sizes_add_up(tmp_path):
    entries = {f"m{i}.png": bytes(400_000) for i in range(3)}
    read_error(write_zip(tmp_path / "preds.zip", entries), "decompresses to 1200000 bytes",
               limits=Limits(max_uncompressed_bytes=1_000_000))


def _patch_declared_size(raw: bytes, size: int, patch_crc: bool) -> bytes:
    """Lie about the one entry's uncompressed size in both the central directory and the local header."""
    out = bytearray(raw)
    central, local = out.rfind(b"PK\x01\x02"), out.find(b"PK\x03\x04")
    assert central > 0 and local == 0
    struct.pack_into("<I", out, central + 24, size)   # central directory: uncompressed size
    struct.pack_into("<I", out, local + 22, size)     # local file header: uncompressed size
    if patch_crc:  # make the truncated read look consistent, so only the size cap and the decoder stand guard
        crc = zlib.crc32(bytes(size))
        struct.pack_into("<I", out, central + 16, crc)
        struct.pack_into("<I", out, local + 14, crc)
    return bytes(out)


@pytest.mark.parametrize("patch_crc", [False, True])
def test_zip_bomb_lying_central_directory_is_stopped_while_reading(tmp_path, patch_crc):
    honest = write_zip(tmp_path / "honest.zip", {"a.png": bytes(5_000_000)})
    path = tmp_path / "preds.zip"
    path.write_bytes(_patch_declared_size(honest.read_bytes(), 100, patch_crc))
    assert zipfile.ZipFile(path).getinfo("a.png").file_size == 100  # the declared check now passes
    read_error(path, "a.png", limits=Limits(max_uncompressed_bytes=1_000_000))


def test_zip_entry_larger_than_one_file_limit(tmp_path):
    path = write_zip(tmp_path / "preds.zip", {"a.png": bytes(50_000)})
    assert path.stat().st_size < 1_000
    read_error(path, "zip entry 'a.png' decompresses past the size limit", "sample 'a'",
               limits=Limits(max_file_bytes=1_000))


def test_zip_with_no_pngs(tmp_path):
    path = write_zip(tmp_path / "preds.zip", {"__MACOSX/._a.png": b"\0\5\x16\7junk", "preds/.DS_Store": b"x"})
    read_error(path, "holds no PNG files")


def test_empty_zip(tmp_path):
    path = tmp_path / "preds.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    read_error(path, "holds no PNG files")


def test_zip_with_other_file(tmp_path):
    path = write_zip(tmp_path / "preds.zip", {"preds/readme.txt": b"hello"})
    read_error(path, "unexpected file 'readme.txt'")


def test_zip_entry_that_is_not_a_png(tmp_path):
    path = write_zip(tmp_path / "preds.zip", {"preds/a.png": b"not a png at all"})
    read_error(path, "preds/a.png", "sample 'a'", "not an image file")


def test_zip_macosx_entries_are_skipped(tmp_path):
    mask = MASKS[("a", 0)]
    path = write_zip(tmp_path / "preds.zip", {
        "preds/": b"",
        "preds/a.png": png_bytes(mask * 255),
        "__MACOSX/preds/._a.png": b"\0\5\x16\7 AppleDouble junk, not a PNG",
        "preds/.DS_Store": b"\0\0\0\1Bud1",
        "preds/Thumbs.db": b"junk",
    })
    preds = read_predictions(path)
    assert preds.kind == "png-zip"
    assert_same_intervals(preds, {("a", 0): mask})


# -------------------------------------------------------------------------------------------- valid inputs

def test_json_round_trip(tmp_path):
    path = write_predictions(tmp_path / "out" / "preds.json", as_predictions(MASKS), split="val", method="m1")
    preds = read_predictions(path)
    assert (preds.kind, preds.split, preds.method, preds.path) == ("json", "val", "m1", str(path))
    assert preds.sha256.startswith("sha256:")
    assert_same_intervals(preds, MASKS)
    assert sorted(p.name for p in path.parent.iterdir()) == ["preds.json"]  # no temp file left behind


def test_json_text_index_defaults_to_zero(tmp_path):
    raw = {"id": "b", "mask": encode_rle(MASKS[("b", 0)])}
    preds = read_predictions(write_doc(tmp_path, document(predictions=[raw])))
    assert set(preds.masks) == {("b", 0)}


def test_json_empty_and_full_masks(tmp_path):
    masks = {("e", 0): np.zeros((3, 4), np.uint8), ("f", 0): np.ones((3, 4), np.uint8),
             ("z", 0): np.zeros((0, 0), np.uint8)}
    path = write_predictions(tmp_path / "p.json", as_predictions(masks), "val", "m")
    preds = read_predictions(path)
    assert_same_intervals(preds, masks)
    assert intervals_area(preds.masks[("f", 0)].intervals) == 12


@pytest.mark.parametrize("scale", [1, 255])
def test_png_folder_binary_values(tmp_path, scale):
    folder = write_png_folder(tmp_path / "pngs", MASKS, scale=scale)
    preds = read_predictions(folder)
    assert preds.kind == "png-folder" and preds.split is None
    assert_same_intervals(preds, MASKS)


def test_png_folder_palette_png(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    mask = MASKS[("a", 0)]
    img = Image.fromarray(mask.astype(np.uint8), "L").convert("P")
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
    img.save(folder / "a.png")
    with Image.open(folder / "a.png") as check:
        assert check.mode == "P"
    assert_same_intervals(read_predictions(folder), {("a", 0): mask})


def test_png_folder_16_bit_png(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    mask = MASKS[("b", 0)]
    assert cv2.imwrite(str(folder / "b.png"), mask.astype(np.uint16) * 65535)
    with Image.open(folder / "b.png") as check:
        assert check.mode.startswith("I")
    assert_same_intervals(read_predictions(folder), {("b", 0): mask})


def test_png_name_gives_text_index(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    mask = MASKS[("a", 0)]
    for name in ("a.png", "a__1.png", "b__12.png", "c__d.PNG"):
        (folder / name).write_bytes(png_bytes(mask * 255))
    preds = read_predictions(folder)
    assert set(preds.masks) == {("a", 0), ("a", 1), ("b", 12), ("c__d", 0)}


def test_zip_with_top_folder(tmp_path):
    entries = {f"submission/{png_name(s, k)}": png_bytes(m * 255) for (s, k), m in MASKS.items()}
    preds = read_predictions(write_zip(tmp_path / "preds.zip", entries))
    assert preds.kind == "png-zip" and preds.sha256.startswith("sha256:")
    assert_same_intervals(preds, MASKS)


def test_stored_zip_is_read(tmp_path):
    entries = {png_name(s, k): png_bytes(m) for (s, k), m in MASKS.items()}
    assert_same_intervals(read_predictions(write_zip(tmp_path / "p.zip", entries, zipfile.ZIP_STORED)), MASKS)


def test_json_folder_and_zip_agree(tmp_path):
    json_path = write_predictions(tmp_path / "p.json", as_predictions(MASKS), "val", "m")
    folder = write_png_folder(tmp_path / "pngs", MASKS)
    zip_path = write_zip(tmp_path / "p.zip", {p.name: p.read_bytes() for p in folder.iterdir()})
    sets = [read_predictions(p) for p in (json_path, folder, zip_path)]
    assert [s.kind for s in sets] == ["json", "png-folder", "png-zip"]
    for key in MASKS:
        first = sets[0].masks[key]
        for other in sets[1:]:
            got = other.masks[key]
            assert (got.height, got.width) == (first.height, first.width)
            assert all(np.array_equal(x, y) for x, y in zip(got.intervals, first.intervals, strict=True))


def test_sha256_follows_the_file(tmp_path):
    path = tmp_path / "p.json"
    write_predictions(path, [prediction_from_mask("a", 0, MASKS[("a", 0)])], "val", "m")
    first = read_predictions(path).sha256
    assert read_predictions(path).sha256 == first
    write_predictions(path, [prediction_from_mask("a", 0, 1 - MASKS[("a", 0)])], "val", "m")
    assert read_predictions(path).sha256 != first


def test_sha256_of_png_folder_follows_the_files(tmp_path):
    folder = write_png_folder(tmp_path / "pngs", MASKS)
    first = read_predictions(folder).sha256
    (folder / "a.png").write_bytes(png_bytes((1 - MASKS[("a", 0)]) * 255))
    assert read_predictions(folder).sha256 != first


# ---------------------------------------------------------------------------- set-level checks (scoring)

GT_SIZES = {"a": (20, 30), "b": (20, 30), "c": (16, 24)}


@pytest.fixture
def release(tmp_path):
    """A tiny release: a has two texts, b one, c one text and no shapes."""
    root = tmp_path / "ReasonSeg"
    val = root / "val"
    val.mkdir(parents=True)
    annotations = {
        "a": {"text": ["the cat", "the animal"], "is_sentence": False,
              "shapes": [{"label": "target", "points": [[2, 2], [12, 2], [12, 10], [2, 10]]}]},
        "b": {"text": ["what would keep you warm in winter?"], "is_sentence": True,
              "shapes": [{"label": "target", "points": [[5, 5], [25, 5], [25, 15], [5, 15]]},
                         {"label": "ignore", "points": [[20, 5], [25, 5], [25, 15], [20, 15]]}]},
        "c": {"text": ["nothing"], "is_sentence": False, "shapes": []},
    }
    for sid, ann in annotations.items():
        h, w = GT_SIZES[sid]
        assert cv2.imwrite(str(val / f"{sid}.jpg"), np.full((h, w, 3), 100, np.uint8))
        (val / f"{sid}.json").write_text(json.dumps(ann), encoding="utf-8")
    return root


@pytest.fixture
def gt(release):
    return build_ground_truth(release, "val", load_split(release, "val"))


def full_masks(keys, sizes=GT_SIZES) -> dict:
    out = {}
    for sid, k in keys:
        h, w = sizes.get(sid, (20, 30))
        mask = np.zeros((h, w), np.uint8)
        mask[2:8, 3 + k:12] = 1
        out[(sid, k)] = mask
    return out


def preds_file(tmp_path, masks: dict, split: str = "val"):
    path = write_predictions(tmp_path / "set.json", as_predictions(masks), split, "m")
    return read_predictions(path)


LISA_KEYS = [("a", 0), ("b", 0), ("c", 0)]


def test_match_complete_set(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks(LISA_KEYS))
    matched = match_predictions(gt, preds)
    assert list(matched) == LISA_KEYS and all(v is not None for v in matched.values())


def test_unknown_ids(tmp_path, gt):
    unknown = [(f"u{i}", 0) for i in range(7)]
    preds = preds_file(tmp_path, full_masks(LISA_KEYS + unknown))
    exc = expect_error(lambda: match_predictions(gt, preds), preds.path, "field 'id'",
                       "7 prediction id(s) are not in split 'val'", "u0, u1, u2, u3, u4, ... (2 more)")
    assert "u5" not in str(exc)


def test_one_unknown_id(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks(LISA_KEYS + [("zebra", 0)]))
    expect_error(lambda: match_predictions(gt, preds), "1 prediction id(s)", "zebra")


def test_missing_ids(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks([("c", 0)]))
    exc = expect_error(lambda: match_predictions(gt, preds), preds.path, "field 'predictions'",
                       "2 of 3 queries have no prediction: a, b", "--missing empty")
    assert exc.field == "predictions"


def test_missing_text_under_all_texts_is_named_with_its_index(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks(LISA_KEYS))
    expect_error(lambda: match_predictions(gt, preds, "all-texts"), "1 of 4 queries have no prediction: a#1")


def test_missing_scored_as_empty(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks([("c", 0)]))
    matched = match_predictions(gt, preds, missing="empty")
    assert list(matched) == LISA_KEYS
    assert matched[("a", 0)] is None and matched[("b", 0)] is None and matched[("c", 0)] is not None
    scores = {(s.id, s.text_index): s for s in score_predictions(gt, preds, missing="empty")}
    target_a = intervals_area(gt.masks["a"].target)
    assert target_a > 0
    assert (scores[("a", 0)].intersection, scores[("a", 0)].union) == (0, target_a)


def test_wrong_mask_size(tmp_path, gt):
    masks = full_masks(LISA_KEYS)
    masks[("b", 0)] = np.zeros((30, 20), np.uint8)  # transposed
    preds = preds_file(tmp_path, masks)
    exc = expect_error(lambda: match_predictions(gt, preds), preds.path, "sample 'b'", "field 'mask.size'",
                       "mask size 30x20 but the image is 20x30")
    assert exc.sample_id == "b"


def test_split_mismatch(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks(LISA_KEYS), split="test")
    expect_error(lambda: match_predictions(gt, preds), preds.path, "field 'split'", "split 'test'",
                 "scoring split 'val'")


def test_png_folder_has_no_split_and_is_not_a_mismatch(tmp_path, gt):
    preds = read_predictions(write_png_folder(tmp_path / "pngs", full_masks(LISA_KEYS)))
    assert list(match_predictions(gt, preds)) == LISA_KEYS


def test_text_index_beyond_the_texts(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks(LISA_KEYS + [("c", 1)]))
    exc = expect_error(lambda: match_predictions(gt, preds), "sample 'c'", "field 'text_index'",
                       "text_index 1 but the image has 1 text(s)")
    assert exc.sample_id == "c"


def test_extra_text_index_accepted_under_lisa_scored_under_all_texts(tmp_path, gt):
    masks = full_masks(LISA_KEYS + [("a", 1)])
    preds = preds_file(tmp_path, masks)
    assert list(match_predictions(gt, preds, "lisa")) == LISA_KEYS
    matched = match_predictions(gt, preds, "all-texts")
    assert list(matched) == [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    assert matched[("a", 1)] is not None
    scores = {(s.id, s.text_index): s for s in score_predictions(gt, preds, "all-texts")}
    assert len(scores) == 4
    # The two texts of `a` share the image's mask but are scored with their own predictions.
    assert scores[("a", 1)].intersection != scores[("a", 0)].intersection
    assert len(score_predictions(gt, preds, "lisa")) == 3


def test_unknown_protocol_and_missing_policy(tmp_path, gt):
    preds = preds_file(tmp_path, full_masks(LISA_KEYS))
    expect_error(lambda: match_predictions(gt, preds, "coco"), "unknown protocol 'coco'")
    expect_error(lambda: match_predictions(gt, preds, missing="zero"), "unknown missing policy 'zero'")


def test_named_split_reads_the_header_wherever_it_stands(tmp_path):
    from reasonseg.submission import named_split

    entry = {"id": "x", "mask": {"size": [4, 4], "counts": "04"}}
    many = [entry] * 5000                                   # well past the first 64 KiB
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"format": "reasonseg-predictions", "version": 1, "split": "val",
                                 "predictions": many}))
    last = tmp_path / "last.json"
    last.write_text(json.dumps({"format": "reasonseg-predictions", "version": 1, "predictions": many,
                                "split": "validation"}))
    unnamed = tmp_path / "unnamed.json"
    unnamed.write_text(json.dumps({"format": "reasonseg-predictions", "version": 1, "predictions": many}))
    assert last.stat().st_size > 1 << 16
    assert named_split(first) == "val" and named_split(last) == "validation" and named_split(unnamed) is None
    with pytest.raises(SubmissionError, match="not found"):
        named_split(tmp_path / "absent.json")
