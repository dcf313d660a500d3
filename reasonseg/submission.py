"""Predictions files (docs/formats.md): JSON with COCO RLE, or a folder / .zip of PNGs. Read, validate, write.

Reading converts every mask straight to interval form, so memory stays proportional to mask boundaries rather
than pixels, and every problem is reported as one `SubmissionError` naming the file, the sample and the field.
Checks against the ground truth (unknown or missing ids, sizes) live in `metrics.scoring`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import numpy as np

from .dataset import atomic_write_text
from .errors import MaskError, SubmissionError, check_plain_text
from .inputs import check_input
from .masks import Intervals, encode_rle, mask_to_intervals, rle_to_intervals
from .schema import Prediction
from .xsam_dump import is_xsam_record, xsam_as_coco

FORMAT, VERSION = "reasonseg-predictions", 1
MAX_FILE_BYTES = 512 * 1024 * 1024          # a JSON file, a zip, or one PNG
MAX_UNCOMPRESSED_BYTES = 4 * 1024 * 1024 * 1024  # all entries of a zip together, as decompressed
MAX_PNG_PIXELS = 64 * 1024 * 1024
MAX_PNG_DECODED_BYTES = 128 * 1024 * 1024  # pixels x channels x bytes per channel, once decoded
_MAX_ZIP_RECORD = 1024                      # bytes of central directory allowed per entry (names are short)
_ZIP_END_SEARCH = 22 + 65_535               # a zip's end record sits within its last 22 bytes + the comment
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by IHDR colour type: grey, RGB, palette, grey+alpha, RGBA
_PNG_NAME = re.compile(r"^(?P<id>.+?)(?:__(?P<k>\d+))?\.png$", re.IGNORECASE)
_SKIPPED_ENTRIES = ("__MACOSX/", ".DS_Store", "Thumbs.db")


@dataclass(frozen=True, repr=False)
class PredictedMask:
    height: int
    width: int
    intervals: Intervals

    def __repr__(self) -> str:
        return f"PredictedMask({self.height}x{self.width}, {len(self.intervals[0])} runs)"


def duplicate_error(where: str, sample_id: str, text_index: int) -> SubmissionError:
    return SubmissionError(f"duplicate prediction for text_index {text_index}", path=where, sample_id=sample_id,
                           hint="keep one mask per (id, text_index)")


@dataclass(repr=False)
class PredictionSet:
    path: str
    kind: str                                   # "json" | "png-folder" | "png-zip"
    masks: dict[tuple[str, int], PredictedMask] = field(default_factory=dict)
    split: str | None = None
    method: str | None = None
    sha256: str = ""

    def check_new(self, sample_id: str, text_index: int) -> None:
        if (sample_id, text_index) in self.masks:
            raise duplicate_error(self.path, sample_id, text_index)

    def add(self, sample_id: str, text_index: int, mask: PredictedMask) -> None:
        self.check_new(sample_id, text_index)
        self.masks[(sample_id, text_index)] = mask

    def __repr__(self) -> str:
        return (f"PredictionSet({self.path!r}, kind={self.kind!r}, split={self.split!r}, method={self.method!r}, "
                f"{len(self.masks)} masks)")


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = MAX_FILE_BYTES
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
    max_png_pixels: int = MAX_PNG_PIXELS
    max_png_decoded_bytes: int = MAX_PNG_DECODED_BYTES
    # A `sandbox.SandboxLimits`: `read_predictions` and `named_split` then read in a child process under those OS
    # limits (what the CLI does by default); None reads in this process.
    sandbox: ReadsElsewhere | None = None


class ReadsElsewhere(Protocol):
    """What `Limits.sandbox` holds: it runs `read_predictions` or `named_split` (`job` "read" or "named_split") on a
    local file somewhere else, e.g. `sandbox.SandboxLimits` in a child process. The caller that builds the Limits
    picks it, so this reader never imports the sandbox (which runs this reader)."""

    def read(self, job: str, path: str | os.PathLike, limits: Limits, index: SplitIndex | None = None) -> Any: ...


@dataclass(frozen=True)
class SplitIndex:
    """What a split accepts, so that a reader refuses a prediction before it decodes the mask.

    With an index, every name and id is checked against the split, and every mask size (an RLE's `size`, a PNG's
    header) against its image, before any RLE or PNG is decoded: a file's cost is bounded by the split, not by the
    file, with at most one prediction per (id, text_index), `max_predictions` in all. The checks are the scorer's
    own (`metrics.scoring`), handed in so that this module needs no ground truth.
    """

    split: str
    max_predictions: int
    max_pixels: int                                     # height x width of the split's largest image
    check_key: Callable[[str, int, str], None]          # (id, text_index, where): raises if the split lacks it
    check_size: Callable[[str, int, int, str], None]    # (id, height, width, where): raises if not the image's
    check_split: Callable[[str | None, str], None]      # (the file's split, where): raises if another split
    has_id: Callable[[str], bool]                       # whether the split holds this id
    check_ids: Callable[[list[str], str], None]         # (ids, where): raises naming every id the split lacks


# ------------------------------------------------------------------------------------------------------ reading

def read_predictions(path: str | os.PathLike, limits: Limits = Limits(),
                     index: SplitIndex | None = None) -> PredictionSet:
    """Read and validate a predictions file, folder of PNGs, or zip of PNGs (against a split's `index` if given)."""
    if limits.sandbox is not None:
        return limits.sandbox.read("read", path, limits, index)
    path = Path(path)
    if path.is_dir():
        return _read_png_folder(path, limits, index)
    return parse_predictions_bytes(_checked_file(path, limits).read_bytes(), str(path), limits, index)


def _checked_file(path: Path, limits: Limits) -> Path:
    """`path`, once it is known to exist, to be a non-empty regular file and to be within the size limit."""
    check_input(path, "predictions", SubmissionError)
    if not path.exists():
        raise SubmissionError("predictions not found", path=str(path))
    size = path.stat().st_size
    if size == 0:
        raise SubmissionError("predictions file is empty", path=str(path))
    if size > limits.max_file_bytes:
        raise SubmissionError(f"predictions file is {size} bytes, over the {limits.max_file_bytes} byte limit",
                              path=str(path), hint="use JSON RLE, which is far smaller than PNGs")
    return path


def named_split(path: str | os.PathLike, limits: Limits = Limits()) -> str | None:
    """The split a predictions JSON names in its header, read without keeping any prediction (so that the file can
    then be read against that split's bounds); None for PNGs, COCO results lists and files that name none."""
    if limits.sandbox is not None:
        return limits.sandbox.read("named_split", path, limits)
    path = Path(path)
    if path.is_dir():
        return None
    with open(_checked_file(path, limits), "rb") as fh:
        head = fh.read(_HEADER_PEEK)
    if head.startswith(b"PK"):                  # a zip of PNGs
        return None
    try:    # our writer puts "split" before the predictions: the file's first bytes are enough
        return _header_split(head.decode("utf-8", errors="replace"), str(path))
    except SubmissionError:
        if len(head) < _HEADER_PEEK:
            raise
    return _header_split(path.read_bytes().decode("utf-8", errors="replace"), str(path))


_HEADER_PEEK = 1 << 16


def _header_split(text: str, where: str) -> str | None:
    doc = _JsonText(text, where)
    if not doc.take("{"):
        return None
    for key in doc.members():
        if key == "split":
            split = doc.value()
            return split if isinstance(split, str) else None
        doc.skip()
    return None


def parse_predictions_bytes(raw: bytes, where: str, limits: Limits = Limits(),
                            index: SplitIndex | None = None) -> PredictionSet:
    """A predictions JSON or PNG zip held in memory (an upload), named `where` in errors."""
    if not raw:
        raise SubmissionError("predictions file is empty", path=where)
    if zipfile.is_zipfile(io.BytesIO(raw)):
        return _read_png_zip(where, raw, limits, index)
    return parse_predictions_json(raw, where, index)


class _JsonText:
    """A JSON text read one value at a time: each prediction is parsed, checked and reduced to intervals before the
    next is parsed, so memory follows what is kept, not the file's object count.

    Nesting is bounded: the standard decoder stops at Python's recursion limit, and that is reported as one line.
    """

    _SPACE = re.compile(r"[ \t\n\r]*")
    _DECODER = json.JSONDecoder()

    def __init__(self, text: str, where: str):
        self.text, self.where, self.pos = text, where, 0

    def fail(self, message: str, pos: int | None = None) -> SubmissionError:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        column = pos - self.text.rfind("\n", 0, pos)
        return SubmissionError(f"predictions file is not JSON: {message} at line {line} column {column}",
                               path=self.where)

    def peek(self) -> str:
        self.pos = self._SPACE.match(self.text, self.pos).end()
        return self.text[self.pos:self.pos + 1]

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def expect(self, char: str, message: str) -> None:
        if not self.take(char):
            raise self.fail(message)

    def value(self):
        self.peek()
        try:
            value, self.pos = self._DECODER.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.msg, exc.pos) from None
        except ValueError:   # an integer of more digits than Python converts (sys.get_int_max_str_digits)
            raise SubmissionError(f"a number at line {self.text.count(chr(10), 0, self.pos) + 1} has over "
                                  f"{sys.get_int_max_str_digits()} digits; no field of a predictions file needs "
                                  "one", path=self.where) from None
        except RecursionError:
            raise SubmissionError(f"JSON nested too deeply at line {self.text.count(chr(10), 0, self.pos) + 1}; "
                                  "a predictions file nests at most a few levels", path=self.where) from None
        return value

    def skip(self) -> None:
        """Pass over one value, holding at most one of its elements at a time."""
        if self.take("["):
            for _ in self.elements():
                self.value()
        elif self.take("{"):
            for _ in self.members():
                self.value()
        else:
            self.value()

    def members(self) -> Iterator[str]:
        """The keys of an object whose '{' was just taken; the caller reads each key's value."""
        if self.take("}"):
            return
        while True:
            if self.peek() != '"':
                raise self.fail("Expecting property name enclosed in double quotes")
            key = self.value()
            self.expect(":", "Expecting ':' delimiter")
            yield key
            if not self.take(","):
                self.expect("}", "Expecting ',' delimiter")
                return

    def elements(self) -> Iterator[int]:
        """The positions of an array whose '[' was just taken; the caller reads each element."""
        if self.take("]"):
            return
        n = 0
        while True:
            yield n
            n += 1
            if not self.take(","):
                self.expect("]", "Expecting ',' delimiter")
                return

    def end(self) -> None:
        if self.peek():
            raise self.fail("Extra data")


_HEADER_KEYS = ("format", "version", "split", "method")


def parse_predictions_json(raw: bytes, where: str, index: SplitIndex | None = None) -> PredictionSet:
    if index is not None:
        _check_object_count(raw.count(b"{"), index, where)
        _check_list_lengths(raw, index, where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError("predictions file is not UTF-8 text (not JSON, nor a zip of PNGs)",
                              path=where) from None
    sha256 = "sha256:" + hashlib.sha256(raw).hexdigest()
    doc = _JsonText(text, where)
    first = doc.peek()
    if first == "[":
        return _read_coco_results(doc, sha256, index)
    if first != "{":
        data = doc.value()
        doc.end()
        raise SubmissionError(f"expected a JSON object with \"format\": \"{FORMAT}\", got "
                              f"{type(data).__name__}", path=where)
    doc.take("{")
    header: dict = {}
    preds: PredictionSet | None = None
    deferred: int | None = None         # where "predictions" starts when it came before the header
    for key in doc.members():
        if key != "predictions":
            if key in _HEADER_KEYS:
                header[key] = doc.value()
            else:
                doc.skip()
            continue
        if doc.peek() != "[":
            raise SubmissionError("'predictions' must be a list", path=where, field="predictions")
        if "format" in header and "version" in header:
            preds = _read_entries(doc, _checked_header(header, where, sha256, index), index)
        else:
            deferred = doc.pos
            doc.skip()
    doc.end()
    if preds is None:
        preds = _checked_header(header, where, sha256, index)
        if deferred is None:
            raise SubmissionError("'predictions' must be a list", path=where, field="predictions")
        doc.pos = deferred
        _read_entries(doc, preds, index)
    if isinstance(header.get("method"), str):
        check_plain_text(header["method"], "method name", path=where, field="method")
    for key in ("split", "method"):      # either may come after the predictions
        if isinstance(header.get(key), str):
            setattr(preds, key, header[key])
    if index is not None:
        index.check_split(preds.split, where)
    return preds


def _checked_header(header: dict, where: str, sha256: str, index: SplitIndex | None) -> PredictionSet:
    if header.get("format") != FORMAT:
        raise SubmissionError(f"'format' must be {FORMAT!r}, got {header.get('format')!r}", path=where,
                              field="format")
    if header.get("version") != VERSION:
        raise SubmissionError(f"unsupported version {header.get('version')!r}; this reasonseg reads version "
                              f"{VERSION}", path=where, field="version")
    split, method = header.get("split"), header.get("method")
    preds = PredictionSet(where, "json", split=split if isinstance(split, str) else None,
                          method=method if isinstance(method, str) else None, sha256=sha256)
    if index is not None:
        index.check_split(preds.split, where)
    return preds


def _read_entries(doc: _JsonText, preds: PredictionSet, index: SplitIndex | None) -> PredictionSet:
    doc.expect("[", "Expecting value")
    unknown: list[str] = []
    for n in doc.elements():
        _add_entry(preds, *_entry_fields(doc.value(), n, preds.path), f"predictions[{n}]", index, unknown)
    if unknown:
        index.check_ids(unknown, preds.path)
    return preds


def _add_entry(preds: PredictionSet, sample_id: str, text_index: int, rle: dict, field: str,
               index: SplitIndex | None, unknown: list[str]) -> None:
    """Check one prediction's key and size against the split (when known), then decode its RLE. An id the split
    lacks is put in `unknown` and not decoded: the reader names them all once the file is read."""
    where = preds.path
    if index is not None:
        if not index.has_id(sample_id):
            unknown.append(sample_id)
            return
        index.check_key(sample_id, text_index, where)
        preds.check_new(sample_id, text_index)
        size = rle.get("size")
        if isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size):
            index.check_size(sample_id, size[0], size[1], where)
    try:
        intervals = rle_to_intervals(rle)
    except MaskError as exc:
        raise SubmissionError(f"malformed RLE: {exc.message}", path=where, sample_id=sample_id,
                              field=f"{field}.mask") from None
    h, w = rle["size"]
    preds.add(sample_id, text_index, PredictedMask(int(h), int(w), intervals))


def _read_coco_results(doc: _JsonText, sha256: str, index: SplitIndex | None) -> PredictionSet:
    """A COCO-style results list `[{"image_id", "segmentation"}]`: image_id is the sample id; `text_index` is read
    when present (default 0); COCO's score and category_id are not used. Read one entry at a time, like ours."""
    where = doc.where
    preds = PredictionSet(where, "json", sha256=sha256)
    doc.take("[")
    unknown: list[str] = []
    for n in doc.elements():
        entry = doc.value()
        if n == 0 and not (isinstance(entry, dict) and "image_id" in entry):
            raise SubmissionError(f"expected a JSON object with \"format\": \"{FORMAT}\", got list", path=where)
        if is_xsam_record(entry):       # X-SAM's dump (reasonseg.xsam_dump): read as the COCO entry it stands for
            entry = xsam_as_coco(entry, n, where)
        if not isinstance(entry, dict) or "segmentation" not in entry:
            raise SubmissionError("a COCO-style results entry needs 'image_id' and 'segmentation'", path=where,
                                  field=f"[{n}]")
        image_id = entry.get("image_id")
        if isinstance(image_id, int) and not isinstance(image_id, bool):
            image_id = str(image_id)
        converted = {"id": image_id, "text_index": entry.get("text_index", 0), "mask": entry["segmentation"]}
        _add_entry(preds, *_entry_fields(converted, n, where), f"[{n}]", index, unknown)
    doc.end()
    if unknown:
        index.check_ids(unknown, where)
    if not preds.masks:
        raise SubmissionError(f"expected a JSON object with \"format\": \"{FORMAT}\", got list", path=where)
    return preds


def _entry_fields(entry, n: int, where: str) -> tuple[str, int, dict]:
    if not isinstance(entry, dict):
        raise SubmissionError("each prediction must be an object", path=where, field=f"predictions[{n}]")
    sample_id = entry.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise SubmissionError("'id' must be a non-empty string (the image file stem)", path=where,
                              field=f"predictions[{n}].id")
    check_plain_text(sample_id, "id", path=where, field=f"predictions[{n}].id")
    text_index = entry.get("text_index", 0)
    if not isinstance(text_index, int) or isinstance(text_index, bool) or text_index < 0:
        raise SubmissionError("'text_index' must be a non-negative integer", path=where, sample_id=sample_id,
                              field=f"predictions[{n}].text_index")
    rle = entry.get("mask")
    if not isinstance(rle, dict):
        raise SubmissionError("'mask' must be an RLE object {\"size\": [h, w], \"counts\": \"...\"}",
                              path=where, sample_id=sample_id, field=f"predictions[{n}].mask")
    return sample_id, text_index, rle


def _png_key(name: str, where: str) -> tuple[str, int]:
    match = _PNG_NAME.match(name)
    if not match:
        raise SubmissionError(f"unexpected file {name[:120]!r}: name masks <id>.png or <id>__<k>.png", path=where)
    return check_plain_text(match["id"], "id", path=where, field=name), int(match["k"] or 0)


def png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, channels, bits per channel) from a PNG's IHDR chunk, or None when `data` is not a PNG."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return height, width, _PNG_CHANNELS.get(colour, 4), depth


def check_png_header(data: bytes, where: str, sample_id: str, limits: Limits, index: SplitIndex | None = None
                     ) -> None:
    """Refuse a PNG from its header alone: over the pixel limit, not the image's size, or too many decoded bytes
    (pixels x channels x bit depth) for its mask. Nothing is decompressed."""
    header = png_header(data)
    if header is None:
        return                  # not a PNG: the decoder's own checks name what it is
    h, w, channels, depth = header
    if w * h > limits.max_png_pixels:
        raise SubmissionError(f"PNG is {w}x{h}, over the {limits.max_png_pixels} pixel limit", path=where,
                              sample_id=sample_id)
    if index is not None:
        index.check_size(sample_id, h, w, where)
    decoded = w * h * channels * max(depth, 8) // 8
    if decoded > limits.max_png_decoded_bytes:
        raise SubmissionError(f"PNG is {w}x{h} with {channels} channel(s) of {depth} bits: {decoded} bytes once "
                              f"decoded, over the {limits.max_png_decoded_bytes} byte limit", path=where,
                              sample_id=sample_id, hint="save masks as 8-bit single-channel PNGs")


def decode_png_mask(data: bytes, where: str, sample_id: str, limits: Limits) -> np.ndarray:
    """A binary mask from PNG bytes: any non-zero pixel is foreground, but only one non-zero value is allowed.

    The header is checked (format, pixel limit, decoded bytes) before any pixel is decoded. Palette images keep
    their indices (what the writer meant); others are decoded by OpenCV, which is faster and releases the GIL. An
    alpha channel is ignored; colour channels must agree.
    """
    import cv2
    from PIL import Image, UnidentifiedImageError

    check_png_header(data, where, sample_id, limits)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise SubmissionError(f"not a PNG (found {img.format})", path=where, sample_id=sample_id)
            w, h = img.size
            if w * h > limits.max_png_pixels:
                raise SubmissionError(f"PNG is {w}x{h}, over the {limits.max_png_pixels} pixel limit",
                                      path=where, sample_id=sample_id)
            if img.mode in ("P", "PA", "1"):
                array = np.asarray(img.convert("L") if img.mode == "1" else img)
            else:
                array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except UnidentifiedImageError:
        raise SubmissionError("not an image file", path=where, sample_id=sample_id,
                              hint="write masks as PNG") from None
    except Image.DecompressionBombError as exc:
        raise SubmissionError(f"image too large: {exc}", path=where, sample_id=sample_id) from None
    except (OSError, SyntaxError, ValueError, cv2.error) as exc:
        raise SubmissionError(f"PNG does not decode: {exc}", path=where, sample_id=sample_id) from None
    if array is None:
        raise SubmissionError("PNG does not decode", path=where, sample_id=sample_id)
    if array.ndim == 3:
        colour = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        if not (colour == colour[..., :1]).all():
            raise SubmissionError("PNG has colour; masks must be single-channel (0 and one foreground value)",
                                  path=where, sample_id=sample_id)
        array = colour[..., 0]
    top = array.max() if array.size else 0
    if array.size and (array.min() < 0 or not ((array == 0) | (array == top)).all()):
        values = np.unique(array)
        shown = ", ".join(str(v) for v in values[:5]) + (", ..." if values.size > 5 else "")
        raise SubmissionError(f"PNG is not binary: values {shown}; write 0 for background and one value "
                              "(1 or 255) for the mask", path=where, sample_id=sample_id)
    return array


def png_bytes_needed(height: int, width: int, channels: int, depth: int) -> int:
    """The most bytes an honest PNG of this header takes: every row (and Adam7's extra filter bytes) stored
    uncompressed, deflate's and the chunks' framing (IDAT chunks down to ~1 KiB), and 64 KiB for ancillary chunks
    (palette, text)."""
    rows = height * (1 + (width * channels * depth + 7) // 8) + 7 * height
    return len(_PNG_SIGNATURE) + 25 + 12 + rows + rows // 64 + 65536


def check_png_layout(data: bytes, where: str, sample_id: str) -> None:
    """Refuse a PNG larger than its header needs, or with bytes after its IEND chunk (padding a decoder skips,
    for free on the wire once zipped). Walks chunk headers only; nothing is inflated."""
    header = png_header(data)
    if header is None:
        return                  # not a PNG: the decoder's own checks name what it is
    if len(data) > png_bytes_needed(*header):
        raise SubmissionError(f"PNG is {len(data)} bytes, more than a {header[1]}x{header[0]} PNG needs "
                              f"({png_bytes_needed(*header)})", path=where, sample_id=sample_id)
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        pos += 12 + length
        if kind == b"IEND":
            if pos < len(data):
                raise SubmissionError(f"PNG has {len(data) - pos} bytes after its IEND chunk", path=where,
                                      sample_id=sample_id, hint="write masks with cv2.imwrite or PIL")
            return


def _png_mask(data: bytes, where: str, sample_id: str, limits: Limits, index: SplitIndex | None = None
              ) -> PredictedMask:
    check_png_header(data, where, sample_id, limits, index)
    check_png_layout(data, where, sample_id)
    array = decode_png_mask(data, where, sample_id, limits)
    if index is not None:
        index.check_size(sample_id, array.shape[0], array.shape[1], where)
    return PredictedMask(array.shape[0], array.shape[1], mask_to_intervals(array))


def _read_png_folder(folder: Path, limits: Limits, index: SplitIndex | None = None) -> PredictionSet:
    preds = PredictionSet(str(folder), "png-folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name not in _SKIPPED_ENTRIES)
    if not files:
        raise SubmissionError("predictions folder is empty", path=str(folder))
    keys = [_png_key(path.name, str(folder)) for path in files]
    if index is not None:   # every name against the split before any file is read
        index.check_ids([sid for sid, _ in keys], str(folder))
        for path, (sid, k) in zip(files, keys, strict=True):
            index.check_key(sid, k, str(path))

    def read_one(item: tuple[Path, tuple[str, int]]) -> tuple[bytes, PredictedMask]:
        path, (sample_id, _) = item
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise SubmissionError(f"PNG is {size} bytes, over the {limits.max_file_bytes} byte limit",
                                  path=str(path), sample_id=sample_id)
        data = path.read_bytes()
        return hashlib.sha256(data).digest(), _png_mask(data, str(path), sample_id, limits, index)

    digest = hashlib.sha256()
    # Decoding dominates; OpenCV and hashlib release the GIL, so threads overlap it. map() keeps file order,
    # so the first bad file in name order is the one reported.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = pool.map(read_one, zip(files, keys, strict=True))
        for path, (sample_id, k), (file_hash, mask) in zip(files, keys, decoded, strict=True):
            digest.update(path.name.encode() + b"\0" + file_hash)
            preds.add(sample_id, k, mask)
    preds.sha256 = "sha256:" + digest.hexdigest()
    return preds


def _safe_entry_name(name: str, where: str) -> PurePosixPath:
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in posix.parts:
        raise SubmissionError(f"zip entry {name[:120]!r} has an absolute path or '..'", path=where,
                              hint="zip the PNGs with relative names only")
    return posix


def _check_object_count(objects: int, index: SplitIndex, where: str) -> None:
    # Every prediction is an object holding an RLE object, and neither RLE strings nor UTF-8 continuation bytes
    # contain '{': counting the bytes bounds the objects the file can make, before anything is decoded.
    if objects > 2 * index.max_predictions + 64:
        raise SubmissionError(f"predictions file holds up to {objects} JSON objects, more than split "
                              f"{index.split!r} can use (at most {index.max_predictions} predictions)",
                              path=where, hint="one prediction per (id, text_index) of the split")


def _check_list_lengths(raw: bytes, index: SplitIndex, where: str) -> None:
    # The parser builds a list whole, at ~36 bytes per number. A list holds no '{' (RLE strings cannot hold one), so
    # it lies within one stretch between two '{' bytes, and its length is at most the commas of that stretch plus one:
    # each stretch may hold no more than the runs of an uncompressed RLE of the split's largest image.
    limit = index.max_pixels + 64
    if raw.count(b",") <= limit:
        return
    start = 0
    while start < len(raw):
        brace = raw.find(b"{", start + 1)
        end = len(raw) if brace < 0 else brace
        if raw.count(b",", start, end) > limit:
            raise SubmissionError(f"predictions file holds a list of over {limit} values (at byte {start}), more "
                                  f"than an RLE of split {index.split!r} can have (its largest image has "
                                  f"{index.max_pixels} pixels)", path=where,
                                  hint="encode masks as compressed RLE strings (reasonseg.encode_rle)")
        start = end


def precheck_stream(fh: BinaryIO, where: str, index: SplitIndex, chunk: int = 1 << 20) -> None:
    """The split's bounds that need no parsing (how many JSON objects; a zip's entries and directory size), checked
    on a file read in chunks: an upload that breaks them is refused without ever being held in memory whole."""
    fh.seek(0)
    braces = 0
    while block := fh.read(chunk):
        braces += block.count(b"{")
    end = _zip_end(fh, where)
    fh.seek(0)
    if end is not None:
        _check_zip_end(end, index, where)
    else:
        _check_object_count(braces, index, where)


@dataclass(frozen=True)
class ZipEnd:
    """What a zip's end records say about its central directory (classic, and ZIP64 where there is one)."""

    entries: int
    directory_bytes: int


_EOCD, _EOCD64, _EOCD64_LOCATOR = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"


def _zip_end(fh: BinaryIO, where: str) -> ZipEnd | None:
    """The entry count and directory size from a zip's end records, read without reading any name; None when the
    file has no end record. A ZIP64 record must agree with the classic one (where that one is not a 0xFFFF...
    placeholder): a reader uses one or the other, so a disagreement is a trap for the bounds, and refused."""
    size = fh.seek(0, io.SEEK_END)
    fh.seek(max(0, size - _ZIP_END_SEARCH))
    tail = fh.read(_ZIP_END_SEARCH)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) < at + 22:
        return None
    entries, directory = struct.unpack("<HI", tail[at + 10:at + 16])
    locator_at = size - len(tail) + at - 20
    if locator_at < 0:
        return ZipEnd(entries, directory)
    fh.seek(locator_at)
    locator = fh.read(20)
    if locator[:4] != _EOCD64_LOCATOR:
        return ZipEnd(entries, directory)
    record_at = struct.unpack("<Q", locator[8:16])[0]
    fh.seek(min(record_at, size))
    record = fh.read(56)
    if len(record) < 56 or record[:4] != _EOCD64:
        raise SubmissionError("zip has a ZIP64 locator but no ZIP64 end record where it points", path=where,
                              hint="write the zip again with a standard tool (zip, Python's zipfile)")
    entries64, directory64 = struct.unpack("<QQ", record[32:48])
    if entries not in (0xFFFF, entries64) or directory not in (0xFFFFFFFF, directory64):
        raise SubmissionError(f"zip end records disagree: the classic one lists {entries} entries in {directory} "
                              f"bytes, the ZIP64 one {entries64} entries in {directory64} bytes", path=where,
                              hint="write the zip again with a standard tool (zip, Python's zipfile)")
    return ZipEnd(entries64, directory64)


def _check_zip_end(end: ZipEnd, index: SplitIndex, where: str) -> None:
    # Opening a zip reads every directory record into memory: bound their count and size by the split first.
    # Room is left for one folder or resource-fork entry (__MACOSX) per PNG.
    most = 2 * index.max_predictions + 64
    if end.entries > most:
        raise SubmissionError(f"zip lists {end.entries} entries, more than split {index.split!r} can use (at "
                              f"most {index.max_predictions} PNGs)", path=where,
                              hint="one PNG per (id, text_index) of the split")
    if end.directory_bytes > most * _MAX_ZIP_RECORD:
        raise SubmissionError(f"zip directory is {end.directory_bytes} bytes, more than split {index.split!r} "
                              f"can use (at most {index.max_predictions} PNGs)", path=where,
                              hint="one PNG per (id, text_index) of the split")


def _read_png_zip(where: str, raw: bytes, limits: Limits, index: SplitIndex | None = None) -> PredictionSet:
    preds = PredictionSet(where, "png-zip", sha256="sha256:" + hashlib.sha256(raw).hexdigest())
    end = _zip_end(io.BytesIO(raw), where)
    if index is not None and end is not None:
        _check_zip_end(end, index, where)
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise SubmissionError(f"zip does not open: {exc}", path=where) from None
    total = 0
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        for info in infos:
            _safe_entry_name(info.filename, where)
        infos = [i for i in infos if not any(s in i.filename for s in _SKIPPED_ENTRIES)]
        if not infos:
            raise SubmissionError("zip holds no PNG files", path=where)
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_uncompressed_bytes:
            raise SubmissionError(f"zip decompresses to {declared} bytes, over the "
                                  f"{limits.max_uncompressed_bytes} byte limit", path=where)
        keys = [_png_key(PurePosixPath(info.filename).name, where) for info in infos]
        if index is not None:   # every name against the split before any entry is extracted
            index.check_ids([sid for sid, _ in keys], where)
            for info, (sid, k) in zip(infos, keys, strict=True):
                index.check_key(sid, k, f"{where}:{info.filename}")
            seen: set[tuple[str, int]] = set()
            for sid, k in keys:
                if (sid, k) in seen:
                    raise duplicate_error(where, sid, k)
                seen.add((sid, k))
        for info, (sample_id, k) in zip(infos, keys, strict=True):
            budget = min(limits.max_file_bytes, limits.max_uncompressed_bytes - total)
            try:
                with archive.open(info) as fh:
                    # The declared size can lie: cap what is inflated, at what the PNG's own header needs.
                    data = fh.read(len(_PNG_SIGNATURE) + 25)
                    header = png_header(data)
                    if header is not None:
                        budget = min(budget, png_bytes_needed(*header))
                    data += fh.read(budget + 1 - len(data))
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
                raise SubmissionError(f"zip entry {info.filename[:120]!r} does not extract: {exc}", path=where,
                                      sample_id=sample_id) from None
            if len(data) > budget:
                what = f"what a {header[1]}x{header[0]} PNG needs ({budget} bytes)" if header else "the size limit"
                raise SubmissionError(f"zip entry {info.filename[:120]!r} decompresses past {what} (zip bomb?)",
                                      path=where, sample_id=sample_id)
            total += len(data)
            preds.add(sample_id, k, _png_mask(data, f"{where}:{info.filename}", sample_id, limits, index))
    return preds


# ------------------------------------------------------------------------------------------------------ writing

def predictions_document(predictions: list[Prediction], split: str, method: str) -> dict:
    return {"format": FORMAT, "version": VERSION, "split": split, "method": method,
            "predictions": [{"id": p.id, "text_index": p.text_index, "mask": p.rle} for p in predictions]}


def write_predictions(path: str | os.PathLike, predictions: list[Prediction], split: str, method: str) -> Path:
    """Write a predictions JSON atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(predictions_document(predictions, split, method)))
    return path


def prediction_from_mask(sample_id: str, text_index: int, mask, threshold: float | None = None) -> Prediction:
    """A prediction from a 2-D mask (numpy or a tensor on any device); float masks need `threshold`
    (see `masks.binary_mask`)."""
    return Prediction(sample_id, text_index, encode_rle(mask, threshold))


def png_name(sample_id: str, text_index: int) -> str:
    return f"{sample_id}.png" if text_index == 0 else f"{sample_id}__{text_index}.png"
