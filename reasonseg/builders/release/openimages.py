"""OpenImages V5-V7 instance-segmentation sources, read in their published formats (docs/formats.md §1).

Default layout under ROOT (each piece overridable; `{split}` in a path is replaced by the split)::

    {split}-annotations-object-segmentation.csv      MaskPath,ImageID,LabelName,BoxID,Box*,PredictedIoU,Clicks
    {split}-images-with-rotation.csv                 attribution: License, Author, OriginalLandingURL, ...
    class-descriptions-boxable.csv (no header) or oidv7-class-descriptions.csv (header LabelName,DisplayName)
    images/{split}/<ImageID>.jpg
    masks/{split}/<MaskPath>   or the official shards {split}-masks-{0..f}.zip (here, in masks/{split}/ or ROOT)

Gotchas kept: ImageIDs stay strings (leading zeros); column names are matched case-insensitively (`ImageId` in
V7 files vs `ImageID`); class CSVs may or may not have a header; masks are not at the image's resolution and
are resized with nearest neighbour to the exact image size.
"""
from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BuildError

CLASS_FILES = ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv",
               "oidv7-class-descriptions.csv", "oidv6-class-descriptions.csv", "class-descriptions.csv")
ATTRIBUTION_FILES = ("{split}-images-with-rotation.csv", "{split}-images-boxable-with-rotation.csv",
                     "image_ids_and_rotation.csv")
# Beyond this relative difference between image and mask aspect ratios the mask belongs to another image.
MAX_ASPECT_DIFFERENCE = 0.05


@dataclass(frozen=True)
class MaskRow:
    mask_path: str
    image_id: str
    label: str  # the MID, e.g. /m/04yx4
    box: tuple[float, float, float, float]  # XMin, XMax, YMin, YMax, normalized
    predicted_iou: float | None


@dataclass
class OpenImagesLayout:
    """Where each piece of an OpenImages source lives. Paths may hold `{split}`."""

    root: Path
    segmentation: str = "{split}-annotations-object-segmentation.csv"
    attribution: str | None = None  # default: the first of ATTRIBUTION_FILES that exists
    classes: str | None = None  # default: the first of CLASS_FILES that exists
    images: str = "images/{split}"
    masks: str = "masks/{split}"
    _cache: dict = field(default_factory=dict, repr=False)

    def path(self, template: str, split: str) -> Path:
        p = Path(template.replace("{split}", split))
        return p if p.is_absolute() else self.root / p

    def segmentation_csv(self, split: str) -> Path:
        path = self.path(self.segmentation, split)
        if not path.is_file():
            raise BuildError("OpenImages segmentation CSV not found", path=str(path),
                             hint="download {split}-annotations-object-segmentation.csv or pass --oi-segmentation")
        return path

    def attribution_csv(self, split: str) -> Path | None:
        candidates = [self.attribution] if self.attribution else list(ATTRIBUTION_FILES)
        for template in candidates:
            path = self.path(template, split)
            if path.is_file():
                return path
        if self.attribution:
            raise BuildError("OpenImages attribution CSV not found", path=str(self.path(self.attribution, split)))
        return None

    def classes_csv(self) -> Path | None:
        candidates = [self.classes] if self.classes else list(CLASS_FILES)
        for template in candidates:
            path = self.path(template, "")
            if path.is_file():
                return path
        if self.classes:
            raise BuildError("OpenImages class descriptions CSV not found", path=str(self.path(self.classes, "")))
        return None

    def image_path(self, split: str, image_id: str) -> Path:
        return self.path(self.images, split) / f"{image_id}.jpg"

    def mask_folder(self, split: str) -> Path:
        return self.path(self.masks, split)


# --------------------------------------------------------------------------------------------------- CSVs

def _open_csv(path: Path):
    # utf-8-sig: some re-saved CSVs start with a byte-order mark, which would hide the first column's name.
    return open(path, newline="", encoding="utf-8-sig")


def _columns(header: list[str], path: Path, wanted: Iterable[str]) -> dict[str, int]:
    index = {name.strip().lower(): k for k, name in enumerate(header)}
    missing = [w for w in wanted if w.lower() not in index]
    if missing:
        raise BuildError(f"CSV lacks column(s) {', '.join(missing)}; header is {','.join(header)}", path=str(path))
    return {w: index[w.lower()] for w in wanted}


def read_class_names(path: Path) -> dict[str, str]:
    """MID → display name, from a class-descriptions CSV with or without its `LabelName,DisplayName` header."""
    names: dict[str, str] = {}
    with _open_csv(path) as fh:
        for k, row in enumerate(csv.reader(fh)):
            if not row:
                continue
            if k == 0 and row[0].strip() == "LabelName":
                continue  # V6+ header (V5 files have none: detect, never assume)
            if len(row) < 2:
                raise BuildError(f"line {k + 1} has {len(row)} field(s), expected MID,DisplayName", path=str(path))
            names[row[0].strip()] = row[1]
    return names


def read_mask_rows(path: Path, image_ids: set[str] | None = None) -> dict[str, list[MaskRow]]:
    """ImageID → its segmentation rows (in file order), keeping only `image_ids` when given."""
    rows: dict[str, list[MaskRow]] = {}
    for row in iter_mask_rows(path, image_ids):
        rows.setdefault(row.image_id, []).append(row)
    return rows


def iter_mask_rows(path: Path, image_ids: Container[str] | None = None) -> Iterator[MaskRow]:
    """The segmentation rows in file order, only those of `image_ids` when given."""
    with _open_csv(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise BuildError("segmentation CSV is empty", path=str(path))
        col = _columns(header, path, ("MaskPath", "ImageID", "LabelName", "BoxXMin", "BoxXMax", "BoxYMin",
                                      "BoxYMax"))
        iou_col = {name.strip().lower(): k for k, name in enumerate(header)}.get("predictediou")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            image_id = row[col["ImageID"]].strip()
            if image_ids is not None and image_id not in image_ids:
                continue
            try:
                box = tuple(float(row[col[c]]) for c in ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax"))
                raw_iou = row[iou_col].strip() if iou_col is not None and iou_col < len(row) else ""
                predicted = float(raw_iou) if raw_iou else None
            except (ValueError, IndexError):
                raise BuildError(f"line {line_no}: malformed box or PredictedIoU", path=str(path)) from None
            yield MaskRow(row[col["MaskPath"]].strip(), image_id, row[col["LabelName"]].strip(), box, predicted)


def read_attribution(path: Path, image_ids: set[str] | None = None) -> dict[str, dict[str, str]]:
    """ImageID → {license, author, url, title, author_profile, rotation} from an images-with-rotation CSV."""
    return dict(iter_attribution(path, image_ids))


def iter_attribution(path: Path, image_ids: Container[str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(ImageID, attribution) in file order, only those of `image_ids` when given."""
    with _open_csv(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise BuildError("attribution CSV is empty", path=str(path))
        col = _columns(header, path, ("ImageID",))
        index = {name.strip().lower(): k for k, name in enumerate(header)}
        fields = {"license": "license", "author": "author", "url": "originallandingurl", "title": "title",
                  "author_profile": "authorprofileurl", "original_url": "originalurl", "rotation": "rotation"}
        for row in reader:
            if not row:
                continue
            image_id = row[col["ImageID"]].strip()
            if image_ids is not None and image_id not in image_ids:
                continue
            yield image_id, {key: row[index[name]] for key, name in fields.items()
                             if name in index and index[name] < len(row)}


# -------------------------------------------------------------------------------------------------- masks

def mask_location(folder: Path, image_id: str, mask_path: str, split: str, zip_names: dict | None = None
                  ) -> tuple[str, str]:
    """("file", path) or ("zip", "<zip path>::<member>") for a MaskPath; BuildError when it is nowhere.

    `zip_names` caches the shards' member names (default: for the life of the process)."""
    direct = folder / mask_path
    if direct.is_file():
        return "file", str(direct)
    shard = f"{split}-masks-{image_id[:1].lower()}.zip"
    for candidate in (folder / shard, folder.parent / shard, folder / f"{split}-masks" / shard):
        if candidate.is_file():
            member = _zip_member(candidate, mask_path, zip_names)
            if member is None:
                raise BuildError(f"mask {mask_path!r} is not in its shard {candidate.name}", path=str(candidate),
                                 field="targets", hint="check the MaskPath or re-download the shard")
            return "zip", f"{candidate}::{member}"
    raise BuildError(f"mask file {mask_path!r} not found", path=str(folder), field="targets",
                     hint=f"expected {direct} or the shard {shard}")


# Member names of each shard read so far, keyed by the file's identity (a rewritten shard is read again). Built
# once per shard per process: the official shards list about 300,000 masks each.
_ZIP_NAMES: dict[tuple, dict[str, str]] = {}


def _file_key(path: str | Path) -> tuple:
    st = os.stat(path)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _zip_member(path: Path, mask_path: str, names: dict | None = None) -> str | None:
    names = _ZIP_NAMES if names is None else names
    try:
        key = _file_key(path)
    except OSError as exc:
        raise BuildError(f"mask shard cannot be read ({exc.strerror})", path=str(path)) from None
    if key not in names:
        try:
            with zipfile.ZipFile(path) as zf:
                names[key] = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        except (zipfile.BadZipFile, OSError) as exc:
            raise BuildError(f"mask shard is not a readable zip ({exc})", path=str(path),
                             hint="the download is probably truncated: fetch it again") from None
    return names[key].get(mask_path)


def read_location_bytes(location: tuple[str, str], zips: ZipCache | None = None) -> bytes:
    """The bytes of a mask or label PNG; `zips` keeps archives open between reads (else each read opens it)."""
    kind, where = location
    if kind == "file":
        return Path(where).read_bytes()
    zip_path, member = where.split("::", 1)
    try:
        if zips is not None:
            return zips.open(zip_path).read(member)
        with zipfile.ZipFile(zip_path) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, OSError, KeyError, EOFError) as exc:
        raise BuildError(f"cannot read {member!r} from the zip ({exc})", path=zip_path,
                         hint="the zip is probably truncated: fetch it again") from None


class ZipCache:
    """Open archives of one process, reused across masks (opening an official shard parses its ~300,000-entry
    directory). Keyed by process id and file identity: a forked worker never shares its parent's file offsets,
    and a rewritten archive is opened again."""

    def __init__(self, size: int = 8):
        self.size = size
        self._open: dict[tuple, zipfile.ZipFile] = {}

    def open(self, path: str) -> zipfile.ZipFile:
        key = (os.getpid(), *_file_key(path))
        zf = self._open.pop(key, None)
        if zf is None:
            zf = zipfile.ZipFile(path)
            while len(self._open) >= self.size:
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
        self._open[key] = zf  # most recently used last
        return zf

    def close(self) -> None:
        for key, zf in list(self._open.items()):
            if key[0] == os.getpid():
                zf.close()
        self._open.clear()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_mask(data: bytes, where: str) -> np.ndarray:
    """A binary mask from PNG bytes, whatever the bit depth or colour type (1-bit, L, RGB, 16-bit).

    The official masks are 1-bit greyscale PNGs: those (and 8-bit greyscale) are decoded by OpenCV, several
    times faster than Pillow, to the same 0/255 values; anything else goes through Pillow.
    """
    if (len(data) > 26 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[25] == 0
            and data[24] in (1, 8) and b"tRNS" not in data[:4096]):
        import cv2

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is not None and image.ndim == 2 and image.dtype == np.uint8:
            return image > 127
    return decode_mask_pillow(data, where)


def decode_mask_pillow(data: bytes, where: str) -> np.ndarray:
    """`decode_mask` through Pillow only (what the naive build does for every mask)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode in ("I;16", "I;16B", "I", "F"):
                return np.array(img) > 0
            return np.array(img.convert("L")) > 127
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise BuildError(f"mask does not decode ({exc})", path=where, field="targets") from None


def check_mask_size(shape: tuple[int, ...], height: int, width: int, where: str) -> None:
    """Refuse a mask whose aspect ratio is not the image's: it belongs to another image."""
    mh, mw = shape[:2]
    if (mh, mw) == (height, width):
        return
    if mh == 0 or mw == 0 or abs((mw / mh) / (width / height) - 1) > MAX_ASPECT_DIFFERENCE:
        raise BuildError(f"mask is {mw}x{mh} but the image is {width}x{height}: another aspect ratio, so it "
                         "belongs to another image", path=where, field="targets",
                         hint="check the MaskPath against the image")


def fit_mask(mask: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """The mask at exactly (height, width), nearest neighbour; a mask of another aspect ratio is refused."""
    from ...masks import resize_mask

    check_mask_size(mask.shape, height, width, where)
    if mask.shape == (height, width):
        return mask
    return resize_mask(mask.astype(np.uint8), height, width).astype(bool)
