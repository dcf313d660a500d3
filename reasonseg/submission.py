"""Predictions files (design.md §3): JSON with COCO RLE, or a folder / .zip of PNGs. Read, validate, write.

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
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .dataset import atomic_write_text
from .errors import MaskError, SubmissionError
from .masks import Intervals, encode_rle, mask_to_intervals, rle_to_intervals
from .schema import Prediction

FORMAT, VERSION = "reasonseg-predictions", 1
MAX_FILE_BYTES = 512 * 1024 * 1024          # a JSON file, a zip, or one PNG
MAX_UNCOMPRESSED_BYTES = 4 * 1024 * 1024 * 1024  # all entries of a zip together, as decompressed
MAX_PNG_PIXELS = 64 * 1024 * 1024
_PNG_NAME = re.compile(r"^(?P<id>.+?)(?:__(?P<k>\d+))?\.png$", re.IGNORECASE)
_SKIPPED_ENTRIES = ("__MACOSX/", ".DS_Store", "Thumbs.db")


@dataclass(frozen=True, repr=False)
class PredictedMask:
    height: int
    width: int
    intervals: Intervals

    def __repr__(self) -> str:
        return f"PredictedMask({self.height}x{self.width}, {len(self.intervals[0])} runs)"


@dataclass(repr=False)
class PredictionSet:
    path: str
    kind: str                                   # "json" | "png-folder" | "png-zip"
    masks: dict[tuple[str, int], PredictedMask] = field(default_factory=dict)
    split: str | None = None
    method: str | None = None
    sha256: str = ""

    def add(self, sample_id: str, text_index: int, mask: PredictedMask) -> None:
        key = (sample_id, text_index)
        if key in self.masks:
            raise SubmissionError(f"duplicate prediction for text_index {text_index}", path=self.path,
                                  sample_id=sample_id, hint="keep one mask per (id, text_index)")
        self.masks[key] = mask

    def __repr__(self) -> str:
        return (f"PredictionSet({self.path!r}, kind={self.kind!r}, split={self.split!r}, method={self.method!r}, "
                f"{len(self.masks)} masks)")


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = MAX_FILE_BYTES
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
    max_png_pixels: int = MAX_PNG_PIXELS


# ------------------------------------------------------------------------------------------------------ reading

def read_predictions(path: str | os.PathLike, limits: Limits = Limits()) -> PredictionSet:
    """Read and validate a predictions file, folder of PNGs, or zip of PNGs."""
    path = Path(path)
    if not path.exists():
        raise SubmissionError("predictions not found", path=str(path))
    if path.is_dir():
        return _read_png_folder(path, limits)
    size = path.stat().st_size
    if size == 0:
        raise SubmissionError("predictions file is empty", path=str(path))
    if size > limits.max_file_bytes:
        raise SubmissionError(f"predictions file is {size} bytes, over the {limits.max_file_bytes} byte limit",
                              path=str(path), hint="use JSON RLE, which is far smaller than PNGs")
    raw = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        return _read_png_zip(path, raw, limits)
    return parse_predictions_json(raw, str(path))


def parse_predictions_json(raw: bytes, where: str) -> PredictionSet:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SubmissionError("predictions file is not UTF-8 text (not JSON, nor a zip of PNGs)",
                              path=where) from None
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"predictions file is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                              path=where) from None
    if isinstance(data, list) and data and isinstance(data[0], dict) and "image_id" in data[0]:
        data = _from_coco_results(data, where)
    if not isinstance(data, dict):
        raise SubmissionError(f"expected a JSON object with \"format\": \"{FORMAT}\", got "
                              f"{type(data).__name__}", path=where)
    if data.get("format") != FORMAT:
        raise SubmissionError(f"'format' must be {FORMAT!r}, got {data.get('format')!r}", path=where,
                              field="format")
    if data.get("version") != VERSION:
        raise SubmissionError(f"unsupported version {data.get('version')!r}; this reasonseg reads version "
                              f"{VERSION}", path=where, field="version")
    entries = data.get("predictions")
    if not isinstance(entries, list):
        raise SubmissionError("'predictions' must be a list", path=where, field="predictions")
    split, method = data.get("split"), data.get("method")
    preds = PredictionSet(where, "json", split=split if isinstance(split, str) else None,
                          method=method if isinstance(method, str) else None,
                          sha256="sha256:" + hashlib.sha256(raw).hexdigest())
    for n, entry in enumerate(entries):
        sample_id, text_index, rle = _entry_fields(entry, n, where)
        try:
            intervals = rle_to_intervals(rle)
        except MaskError as exc:
            raise SubmissionError(f"malformed RLE: {exc.message}", path=where, sample_id=sample_id,
                                  field=f"predictions[{n}].mask") from None
        h, w = rle["size"]
        preds.add(sample_id, text_index, PredictedMask(int(h), int(w), intervals))
    return preds


def _from_coco_results(entries: list, where: str) -> dict:
    """A COCO-style results list `[{"image_id", "segmentation"}]` as a predictions document: image_id is the
    sample id; `text_index` is read when present (default 0); COCO's score and category_id are not used."""
    converted = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "segmentation" not in entry:
            raise SubmissionError("a COCO-style results entry needs 'image_id' and 'segmentation'", path=where,
                                  field=f"[{n}]")
        image_id = entry.get("image_id")
        if isinstance(image_id, int) and not isinstance(image_id, bool):
            image_id = str(image_id)
        converted.append({"id": image_id, "text_index": entry.get("text_index", 0), "mask": entry["segmentation"]})
    return {"format": FORMAT, "version": VERSION, "predictions": converted}


def _entry_fields(entry, n: int, where: str) -> tuple[str, int, dict]:
    if not isinstance(entry, dict):
        raise SubmissionError("each prediction must be an object", path=where, field=f"predictions[{n}]")
    sample_id = entry.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise SubmissionError("'id' must be a non-empty string (the image file stem)", path=where,
                              field=f"predictions[{n}].id")
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
        raise SubmissionError(f"unexpected file {name!r}: name masks <id>.png or <id>__<k>.png", path=where)
    return match["id"], int(match["k"] or 0)


def decode_png_mask(data: bytes, where: str, sample_id: str, limits: Limits) -> np.ndarray:
    """A binary mask from PNG bytes: any non-zero pixel is foreground, but only one non-zero value is allowed.

    The header is checked (format, pixel limit) before any pixel is decoded. Palette images keep their indices
    (what the writer meant); others are decoded by OpenCV, which is faster and releases the GIL. An alpha
    channel is ignored; colour channels must agree.
    """
    import cv2
    from PIL import Image, UnidentifiedImageError

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
    except (OSError, SyntaxError, ValueError) as exc:
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


def _png_mask(data: bytes, where: str, sample_id: str, limits: Limits) -> PredictedMask:
    array = decode_png_mask(data, where, sample_id, limits)
    return PredictedMask(array.shape[0], array.shape[1], mask_to_intervals(array))


def _read_png_folder(folder: Path, limits: Limits) -> PredictionSet:
    preds = PredictionSet(str(folder), "png-folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name not in _SKIPPED_ENTRIES)
    if not files:
        raise SubmissionError("predictions folder is empty", path=str(folder))
    keys = [_png_key(path.name, str(folder)) for path in files]

    def read_one(item: tuple[Path, tuple[str, int]]) -> tuple[bytes, PredictedMask]:
        path, (sample_id, _) = item
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise SubmissionError(f"PNG is {size} bytes, over the {limits.max_file_bytes} byte limit",
                                  path=str(path), sample_id=sample_id)
        data = path.read_bytes()
        return hashlib.sha256(data).digest(), _png_mask(data, str(path), sample_id, limits)

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
        raise SubmissionError(f"zip entry {name!r} has an absolute path or '..'", path=where,
                              hint="zip the PNGs with relative names only")
    return posix


def _read_png_zip(path: Path, raw: bytes, limits: Limits) -> PredictionSet:
    where = str(path)
    preds = PredictionSet(where, "png-zip", sha256="sha256:" + hashlib.sha256(raw).hexdigest())
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as exc:
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
        for info in infos:
            name = PurePosixPath(info.filename).name
            sample_id, k = _png_key(name, where)
            budget = min(limits.max_file_bytes, limits.max_uncompressed_bytes - total)
            try:
                with archive.open(info) as fh:
                    data = fh.read(budget + 1)  # the declared size can lie: cap what is actually read
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                raise SubmissionError(f"zip entry {info.filename!r} does not extract: {exc}", path=where,
                                      sample_id=sample_id) from None
            if len(data) > budget:
                raise SubmissionError(f"zip entry {info.filename!r} decompresses past the size limit "
                                      "(zip bomb?)", path=where, sample_id=sample_id)
            total += len(data)
            preds.add(sample_id, k, _png_mask(data, f"{where}:{info.filename}", sample_id, limits))
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
