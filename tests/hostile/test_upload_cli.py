"""Hostile predictions files through the command line (`reasonseg score`, `reasonseg submit`) as subprocesses: one
line on stderr, exit code 2, no traceback, and bounded time and peak memory for the resource attacks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error
from measured_cli import run_measured
from upload_helpers import header_only_png, many_predictions, nested_json, predictions_doc, zero_png

from reasonseg.dataset import load_split
from reasonseg.masks import encode_rle
from reasonseg.sample import write_sample_release
from reasonseg.submission import png_name

MIB = 1024 * 1024
SECONDS = 60
PEAK_MEMORY = 600 * MIB     # the whole CLI process (numpy, OpenCV, the release); a decoded bomb alone is 512 MiB


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("hostile-cli") / "release")


@pytest.fixture(scope="module")
def flood(tmp_path_factory) -> Path:
    """10^6 predictions in 53 MB, the review's upload."""
    return write(tmp_path_factory.mktemp("flood"), "flood.json", many_predictions(1_000_000))


@pytest.fixture(scope="module")
def val(release):
    return load_split(release, "val")


def run(*args: str):
    """The CLI as a subprocess: (result, seconds, its own peak RSS in bytes)."""
    result = run_measured(*args, timeout=300)
    return result, result.seconds, result.peak_rss_mb * MIB


def score(release, predictions: Path, *extra: str):
    return run("score", str(release), str(predictions), "--split", "val", "--bootstrap", "0", *extra)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("key", ["predictions", "padding"])
def test_deeply_nested_json(tmp_path, release, key):
    result, seconds, peak = score(release, write(tmp_path, "deep.json", nested_json(200_000, key)))
    assert_one_line_error(result, "deep.json", "nested too deeply")
    assert seconds < SECONDS and peak < PEAK_MEMORY


def test_rle_counts_over_2_63(tmp_path, release, val):
    s = val[0]
    doc = predictions_doc([{"id": s.id, "text_index": 0, "mask": {"size": [s.height, s.width],
                                                                 "counts": [0, 2**63, 1]}}])
    result, _, _ = score(release, write(tmp_path, "counts.json", doc))
    assert_one_line_error(result, "counts.json", repr(s.id), "oversized run")


def test_text_index_over_2_63(tmp_path, release, val):
    s = val[0]
    doc = predictions_doc([{"id": s.id, "text_index": 2**64, "mask": encode_rle(np.zeros((s.height, s.width)))}])
    result, _, _ = score(release, write(tmp_path, "ids.json", doc))
    assert_one_line_error(result, "ids.json", f"text_index {2**64}")


def test_png_header_over_179_megapixels(tmp_path, release, val):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / png_name(val[0].id, 0)).write_bytes(header_only_png(20_000, 10_000))
    result, seconds, peak = score(release, folder)
    assert_one_line_error(result, "20000x10000", "pixel limit")
    assert seconds < SECONDS and peak < PEAK_MEMORY


def test_16_bit_rgba_8192_png_is_refused_from_its_header(tmp_path, release, val):
    """No split to check against (the submit client's local check): the decoded size alone refuses it."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / png_name(val[0].id, 0)).write_bytes(zero_png(8192, 8192, bit_depth=16, colour_type=6))
    result, seconds, peak = run("submit", str(folder), "--server", "http://127.0.0.1:1", "--token", "t",
                                "--split", "val", "--method", "m")
    assert_one_line_error(result, "8192x8192", "4 channel(s) of 16 bits", "byte limit")
    assert seconds < SECONDS and peak < PEAK_MEMORY
    result, seconds, peak = score(release, folder)     # against the split: the size is wrong first
    assert_one_line_error(result, "mask size 8192x8192")
    assert seconds < SECONDS and peak < PEAK_MEMORY


def test_a_million_predictions_are_refused_by_the_scorer_before_parsing(release, flood):
    result, seconds, peak = score(release, flood)
    assert_one_line_error(result, "flood.json", "JSON objects")
    assert seconds < SECONDS and peak < PEAK_MEMORY


def test_without_split_the_named_split_bounds_the_read(release, flood):
    """`score` without --split takes the split from the file's header, then reads against that split's bounds."""
    result, seconds, peak = run("score", str(release), str(flood), "--bootstrap", "0")
    assert_one_line_error(result, "flood.json", "JSON objects")
    assert seconds < SECONDS and peak < PEAK_MEMORY


def test_coco_list_with_huge_image_ids(tmp_path, release):
    entries = [{"image_id": 2**64 + n, "segmentation": {"size": [4, 4], "counts": "04"}} for n in range(3)]
    result, _, _ = score(release, write(tmp_path, "coco.json", json.dumps(entries).encode()))
    assert_one_line_error(result, "coco.json", "not in split 'val'", str(2**64))


@pytest.mark.parametrize("where", ["counts", "padding"])
def test_a_list_longer_than_any_rle_of_the_split_is_refused_before_parsing(tmp_path, release, val, where):
    """60 million numbers in one list (120 MB of text): parsed, they would take ~0.5 GB as a Python list (or a minute,
    one element at a time, as the value of an unused key); the split's largest image bounds every list first."""
    s = val[0]
    entry = {"id": s.id, "text_index": 0, "mask": {"size": [s.height, s.width],
                                                  "counts": "HUGE" if where == "counts" else encode_rle(
                                                      np.zeros((s.height, s.width), np.uint8))["counts"]}}
    doc = json.loads(predictions_doc([entry]))
    if where == "padding":
        doc = {"padding": "HUGE", **doc}
    text = json.dumps(doc).encode().replace(b'"HUGE"', b"[" + b"0," * 60_000_000 + b"0]")
    result, seconds, peak = score(release, write(tmp_path, "long.json", text))
    assert_one_line_error(result, "long.json", "list of over", "largest image")
    assert seconds < SECONDS and peak < PEAK_MEMORY


def test_an_uncompressed_rle_of_one_pixel_runs_is_not_too_long(tmp_path, release, val):
    """The bound admits the longest honest list: an uncompressed RLE with a run for every pixel."""
    predictions = []
    for s in val:
        runs = [0] + [1] * (s.height * s.width) if s is val[0] else [s.height * s.width]
        predictions.append({"id": s.id, "text_index": 0, "mask": {"size": [s.height, s.width], "counts": runs}})
    result, _, _ = score(release, write(tmp_path, "runs.json", predictions_doc(predictions)), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["groups"]["overall"]["n"] == len(val)


def test_score_reads_in_the_sandbox_and_trusted_lifts_its_limits(tmp_path, release, val):
    """A valid file led by 12 MiB of zero-length runs needs ~700 MiB to read: over the default 512 MiB of the
    sandboxed reader (one line, the CLI process itself stays small), read and scored with --trusted."""
    from upload_helpers import zero_run_rle

    entries = [{"id": s.id, "text_index": 0, "mask": encode_rle(np.zeros((s.height, s.width), np.uint8))}
               for s in val]
    entries[0]["mask"] = zero_run_rle(entries[0]["mask"], 12 * MIB)
    path = write(tmp_path, "runs.json", predictions_doc(entries))
    result, seconds, peak = score(release, path)
    assert_one_line_error(result, "runs.json", "needs more than 512 MiB to read", "--trusted")
    assert seconds < SECONDS and peak < 300 * MIB
    trusted, _, trusted_peak = score(release, path, "--trusted", "--json")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["groups"]["overall"]["n"] == len(val) and trusted_peak > 512 * MIB
