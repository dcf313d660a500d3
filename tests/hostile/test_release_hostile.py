"""Hostile release folders through the user's path (`reasonseg validate` / `reasonseg score` as subprocesses):
each gives one error line naming the file, never a traceback, in bounded time and memory."""
from __future__ import annotations

import json
import os
import struct
import zlib

import pytest
from helpers import write_release
from measured_cli import run_measured

GOOD = {"text": ["the cup"], "is_sentence": False,
        "shapes": [{"label": "target", "points": [[1, 1], [20, 1], [20, 20]]}]}
MAX_SECONDS = 60  # a loaded two-core machine starts the CLI in a few seconds; the attacks took minutes or GBs
MAX_RSS_MB = 700  # the CLI with numpy, OpenCV and Pillow loaded stays far below; a 30000^2 decode is 2.7 GB


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _nested(root):
    path = root / "val" / "bad.json"
    path.write_text('{"text": ["x"], "is_sentence": false, "shapes": ' + "[" * 200_000 + "]" * 200_000 + "}")
    return path


def _huge_int(root):
    path = root / "val" / "bad.json"
    path.write_text(json.dumps(GOOD).replace("[1, 1]", "[1" + "0" * 400 + ", 1]"))
    return path


def _over_4300_digits(root):
    path = root / "val" / "bad.json"
    path.write_text(json.dumps(GOOD).replace("[1, 1]", "[1" + "0" * 6000 + ", 1]"))
    return path


def _huge_image_header(root):
    path = root / "val" / "bad.jpg"  # a PNG named .jpg, as Pillow and OpenCV sniff the content
    path.write_bytes(_png_header_only(30000, 30000))
    return path


CASES = {
    "nested JSON": (_nested, "nested too deeply"),
    "integer coordinate too large for a float": (_huge_int, "out-of-range coordinate"),
    "integer of over 4300 digits": (_over_4300_digits, "number too long"),
    "30000x30000 image header": (_huge_image_header, "image header gives over"),
}


def _release(tmp_path):
    return write_release(tmp_path / "rel", "val", {"ok": GOOD, "bad": GOOD}, {"ok": (32, 48), "bad": (32, 48)})


def _assert_bounded(result):
    assert "Traceback" not in result.stderr + result.stdout
    assert result.seconds < MAX_SECONDS and result.peak_rss_mb < MAX_RSS_MB, (result.seconds, result.peak_rss_mb)


@pytest.mark.parametrize("case", list(CASES))
def test_validate_reports_the_hostile_file_on_one_line(tmp_path, case):
    make, words = CASES[case]
    root = _release(tmp_path)
    bad = make(root)
    result = run_measured("validate", str(root))
    _assert_bounded(result)
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stdout + result.stderr
    assert str(bad) in errors[0] and words in errors[0]
    assert "FAILED: 1 error(s)" in result.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_score_stops_on_the_hostile_file_with_exit_2(tmp_path, case):
    make, words = CASES[case]
    root = _release(tmp_path)
    bad = make(root)
    predictions = tmp_path / "preds.json"
    predictions.write_text("[]")
    result = run_measured("score", str(root), str(predictions), "--split", "val", "--bootstrap", "0")
    _assert_bounded(result)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert str(bad) in result.stderr and words in result.stderr


def _loop(path):
    os.symlink(path.name, path)


def test_symlink_loops_in_a_release_are_errors_not_tracebacks(tmp_path):
    root = _release(tmp_path)
    _loop(root / "val" / "looped.jpg")  # a file entry pointing at itself
    _loop(root / "test")  # a split folder pointing at itself
    (root / "manifest.json").write_text(json.dumps({"files": {"val/looped.jpg": "sha256:00"}}))
    result = run_measured("validate", str(root))
    _assert_bounded(result)
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert result.returncode == 1
    assert any(str(root / "val" / "looped.jpg") in e and "symlink loop" in e for e in errors)
    assert any(e.startswith(f"error: {root / 'test'}:") and "symlink loop" in e for e in errors)
    assert all("symlink loop" in e for e in errors), errors


def test_far_out_coordinates_rasterize_in_bounded_time(tmp_path):
    far = [[-1e9, -1e9], [1e9, -1e9], [1e9, 1e9]]
    shapes = [{"label": label, "points": far} for label in ("target", "ignore", "target", "target")]
    doc = {"text": ["everything"], "is_sentence": False, "shapes": shapes}
    # OpenCV alone walks 10^9 rows per drawing here: about 10 s each, 8 drawings (areas, then the mask).
    root = write_release(tmp_path / "rel", "val", {"far": doc}, {"far": (480, 640)})
    result = run_measured("validate", str(root))
    _assert_bounded(result)
    assert result.returncode == 0 and result.seconds < 30, (result.seconds, result.stdout)


def _big_png(width: int, height: int) -> bytes:
    """A valid black RGB PNG of width x height, compressed row by row (a few hundred KB, little memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_large_png_is_checked_without_decoding_its_pixels(tmp_path):
    root = _release(tmp_path)
    png = _big_png(9000, 9000)  # 81 Mpx: 243 MB once decoded
    (root / "val" / "ok.jpg").unlink()
    (root / "val" / "ok.png").write_bytes(png)
    (root / "val" / "bad.jpg").unlink()
    (root / "val" / "bad.png").write_bytes(png[: len(png) // 2])
    result = run_measured("validate", str(root))
    assert "Traceback" not in result.stderr + result.stdout
    assert result.seconds < MAX_SECONDS and result.peak_rss_mb < 200, (result.seconds, result.peak_rss_mb)
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(root / "val" / "bad.png") in errors[0] and "truncated" in errors[0].lower()
