"""Read, write and validate a ReasonSeg release folder (docs/protocol.md §1, docs/formats.md).

The public layout is `{train,val,test}/<name>.jpg + <name>.json` and `explanatory/train.json`; ours adds
`manifest.json`. Readers accept the public release as it is, quirks included.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .schema import EXPECTED_COUNTS, SPLITS, Sample, Shape, canonical_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 178_956_970  # Pillow's own refusal threshold (2x its warning): far above any real photo
MAX_DECODED_CHECK_PIXELS = 40_000_000  # `validate` decodes non-JPEG images up to this size (<= 320 MB at 16-bit RGBA)
MANIFEST = "manifest.json"
KNOWN_LABELS = {"target", "flag"}


class ReleaseWarning(UserWarning):
    """Something a lenient reader accepted but a user should know about."""


# ------------------------------------------------------------------------------------------------ annotations

def read_annotation(path: Path) -> tuple[dict, str]:
    """The parsed JSON and the encoding that read it: UTF-8, else cp1252 after any failure, as the reference."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"cannot read annotation: {exc.strerror}", path=str(path)) from exc
    if size > MAX_JSON_BYTES:
        raise DatasetError(f"annotation is {size} bytes, over the {MAX_JSON_BYTES} byte limit", path=str(path))
    decoded = decode_annotation(path.read_bytes())
    if decoded is None:
        raise DatasetError("annotation is not valid JSON in UTF-8 or cp1252 (or is nested too deeply, or holds a "
                           "number too long to read)", path=str(path), hint="fix or re-export the file")
    _, data, encoding = decoded
    if not isinstance(data, dict):
        raise DatasetError("annotation must be a JSON object", path=str(path))
    return data, encoding


def decode_annotation(raw: bytes) -> tuple[str, object, str] | None:
    """(text, parsed JSON, encoding) of annotation bytes: UTF-8, else cp1252 after any failure; None if neither."""
    for encoding in ("utf-8", "cp1252"):
        try:
            text = raw.decode(encoding)
            return text, json.loads(text), encoding
        except (UnicodeDecodeError, ValueError, RecursionError):
            # ValueError: bad JSON, or an integer of over 4300 digits; RecursionError: nesting past ~1000 levels.
            continue
    return None


def _numeric_points(points) -> tuple[tuple[float, float], ...] | None:
    """The fast path of the points check, for the common case of finite, in-range numbers: a polygon of
    thousands of vertices is checked in one numpy pass. None sends everything else to the exact check below."""
    if not isinstance(points, list) or not points:
        return None
    try:
        array = np.asarray(points)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] < 2:
        return None
    xy = array[:, :2].astype(np.float64)
    if not (np.abs(xy) <= 2**30).all():     # NaN fails this too
        return None
    return tuple(zip(xy[:, 0].tolist(), xy[:, 1].tolist(), strict=True))     # zip makes the pairs in C


def parse_shapes(data: dict, path: Path, sample_id: str) -> tuple[Shape, ...]:
    raw_shapes = data.get("shapes", [])
    if raw_shapes is None:
        raw_shapes = []
    if not isinstance(raw_shapes, list):
        raise DatasetError("'shapes' must be a list", path=str(path), sample_id=sample_id, field="shapes")
    shapes = []
    for k, raw in enumerate(raw_shapes):
        where = f"shapes[{k}]"
        if not isinstance(raw, dict):
            raise DatasetError("each shape must be an object", path=str(path), sample_id=sample_id, field=where)
        label = raw.get("label", "")
        if not isinstance(label, str):
            raise DatasetError("'label' must be a string", path=str(path), sample_id=sample_id,
                               field=f"{where}.label")
        points = raw.get("points", [])
        pts = _numeric_points(points)
        if pts is not None:
            shapes.append(Shape(label, pts))
            continue
        try:
            if isinstance(points, str) or any(isinstance(p, str) for p in points):
                raise TypeError  # "12" would otherwise be read as the point (1, 2)
            pts = tuple((float(p[0]), float(p[1])) for p in points)
        except (TypeError, ValueError, IndexError, KeyError):
            raise DatasetError("'points' must be a list of [x, y] numbers", path=str(path),
                               sample_id=sample_id, field=f"{where}.points") from None
        except OverflowError:  # an integer too large for a float
            raise DatasetError("'points' holds NaN or an out-of-range coordinate", path=str(path),
                               sample_id=sample_id, field=f"{where}.points") from None
        if any(p != p or abs(p) > 2**30 for xy in pts for p in xy):
            raise DatasetError("'points' holds NaN or an out-of-range coordinate", path=str(path),
                               sample_id=sample_id, field=f"{where}.points")
        shapes.append(Shape(label, pts))
    return tuple(shapes)


def parse_sample(split: str, image_path: Path, json_path: Path, height: int, width: int) -> Sample:
    sample_id = image_path.stem
    data, encoding = read_annotation(json_path)
    texts = data.get("text", [])
    if isinstance(texts, str):
        raise DatasetError("'text' must be a list of strings, got a single string", path=str(json_path),
                           sample_id=sample_id, field="text", hint='wrap it: "text": ["..."]')
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DatasetError("'text' must be a list of strings", path=str(json_path), sample_id=sample_id,
                           field="text")
    is_sentence = data.get("is_sentence")
    if not isinstance(is_sentence, bool):
        raise DatasetError("'is_sentence' must be true or false", path=str(json_path), sample_id=sample_id,
                           field="is_sentence")
    source = data.get("source") if isinstance(data.get("source"), str) else None
    extra = tuple(sorted(set(data) - {"text", "is_sentence", "shapes"}))
    return Sample(sample_id, split, image_path, json_path, tuple(texts), is_sentence,
                  parse_shapes(data, json_path, sample_id), height, width, encoding, source, extra)


# ------------------------------------------------------------------------------------------------------ images

_ROTATING_ORIENTATIONS = {5, 6, 7, 8}


def _exif_orientation(img) -> int:
    if img.format == "PNG" and "exif" not in img.info and img.width * img.height > MAX_DECODED_CHECK_PIXELS:
        # Pillow looks for an eXIf chunk after a PNG's pixel data by decoding every pixel: not for a huge image.
        return 1
    return img.getexif().get(0x0112, 1) if img.format in ("JPEG", "TIFF", "WEBP", "PNG") else 1


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) as `cv2.imread` would return them, read from the header without decoding pixels.

    cv2.imread applies the EXIF orientation, so a 90° orientation swaps the stored width and height.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                orientation = _exif_orientation(img)
    except Image.DecompressionBombError:
        raise DatasetError(f"image header gives over {MAX_IMAGE_PIXELS} pixels", path=str(path),
                           hint="a release image must be a real photo; re-export it") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"image does not open: {exc}", path=str(path)) from None
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(f"image header gives {width}x{height} = {width * height} pixels, over the "
                           f"{MAX_IMAGE_PIXELS} limit", path=str(path),
                           hint="a release image must be a real photo; re-export it")
    if orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    return height, width


# ------------------------------------------------------------------------------------------------------ splits

def split_dirs(root: Path, split: str) -> list[tuple[str, Path]]:
    """The folders of a split name; `train_val` joins several, as the reference allows; `validation` is `val`.
    (`reasonseg.sources.split_dirs` takes any data source.)"""
    root = Path(root)
    names = canonical_split(split).split("_")
    out = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise DatasetError(f"split folder {name!r} not found", path=str(root),
                               hint=f"expected {root / name}/ with <name>.jpg + <name>.json pairs")
        out.append((name, folder))
    return out


def list_images(folder: Path, strict: bool = False) -> list[Path]:
    """Images of a split folder, sorted by name. Strict = `.jpg` only, as the reference globs."""
    suffixes = (".jpg",) if strict else IMAGE_SUFFIXES
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                    and not (strict and p.suffix != ".jpg"))
    if not strict:
        others = [p.name for p in images if p.suffix != ".jpg"]
        if others:
            warnings.warn(f"{folder}: {len(others)} image(s) are not .jpg (e.g. {others[0]}); the reference "
                          "loader only reads .jpg", ReleaseWarning, stacklevel=2)
    return images


def load_split(root: str | os.PathLike, split: str, strict: bool = False) -> list[Sample]:
    """Every sample of a split (or joined splits such as `train_val`) of a release folder, with image sizes from
    headers. `reasonseg.load_split` (`reasonseg.sources`) takes a published folder or a Hub id too."""
    root = Path(root)
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    manifest = read_manifest(root) or {}
    sample_sources = manifest.get("sample_sources") if isinstance(manifest.get("sample_sources"), dict) else {}
    for name, folder in split_dirs(root, split):
        for image_path in list_images(folder, strict):
            sample_id = image_path.stem
            if sample_id in seen:
                raise DatasetError(f"two images share the id {sample_id!r}: {seen[sample_id].name} and "
                                   f"{image_path.name}", path=str(folder), hint="rename one of them")
            seen[sample_id] = image_path
            json_path = image_path.with_suffix(".json")
            if not json_path.is_file():
                raise DatasetError("image has no annotation JSON beside it", path=str(image_path),
                                   sample_id=sample_id, hint=f"expected {json_path.name}")
            height, width = image_size(image_path)
            sample = parse_sample(name, image_path, json_path, height, width)
            source = sample_sources.get(f"{name}/{sample_id}")
            samples.append(dataclasses.replace(sample, source=source) if isinstance(source, str) else sample)
    if not samples:
        raise DatasetError(f"split {split!r} has no images", path=str(root))
    return samples


# ---------------------------------------------------------------------------------------------------- manifest

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux shows it without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextmanager
def atomic_text_file(path: Path):
    """A UTF-8 text handle whose content appears at `path` (via a temp file in the same folder and a rename) only
    once the block ends without an error, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the file gets the mode a plain open() would give: the existing file's, else the umask's
        os.chmod(tmp, _mode_for(path))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_text_file(path) as fh:
        fh.write(text)


def build_manifest(root: Path, name: str, version: str, sources: dict | None = None,
                   sample_sources: dict[str, str] | None = None) -> dict:
    """The manifest contract; `sample_sources` maps "split/id" to the dataset an image came from, which
    scoring reports as `source:<name>` groups."""
    splits, files = {}, {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        samples = load_split(root, split)
        splits[split] = {"count": len(samples), "short": sum(not s.is_sentence for s in samples),
                         "long": sum(s.is_sentence for s in samples)}
        for s in samples:
            for p in (s.image_path, s.json_path):
                files[p.relative_to(root).as_posix()] = sha256_file(p)
    explanatory = root / "explanatory" / "train.json"
    if explanatory.is_file():
        files[explanatory.relative_to(root).as_posix()] = sha256_file(explanatory)
    manifest = {"name": name, "version": version, "splits": splits, "files": dict(sorted(files.items())),
                "sources": sources or {}}
    if sample_sources:
        manifest["sample_sources"] = dict(sorted(sample_sources.items()))
    return manifest


def write_manifest(root: str | os.PathLike, name: str = "ReasonSeg", version: str = "1.0",
                   sources: dict | None = None, sample_sources: dict[str, str] | None = None) -> dict:
    root = Path(root)
    manifest = build_manifest(root, name, version, sources, sample_sources)
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(root: str | os.PathLike) -> dict | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # also a number too long, nesting too deep
        raise DatasetError(f"manifest is not valid JSON: {exc}", path=str(path)) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise DatasetError("manifest must be an object with a 'files' mapping", path=str(path))
    return manifest


def manifest_sha256(root: str | os.PathLike) -> str | None:
    path = Path(root) / MANIFEST
    return sha256_file(path) if path.is_file() else None


def annotations_fingerprint(samples: Iterable[Sample]) -> str:
    """A digest of what scoring depends on (ids, sizes, annotation bytes) for releases without a manifest."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: (s.split, s.id)):
        digest.update(f"{s.split}/{s.id}:{s.height}x{s.width}:".encode())
        digest.update(hashlib.sha256(s.json_path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


# -------------------------------------------------------------------------------------------------- validation

@dataclass
class Finding:
    level: str  # "error" | "warning"
    path: str
    message: str
    sample_id: str | None = None

    def render(self) -> str:
        where = self.path + (f" [{self.sample_id}]" if self.sample_id else "")
        return f"{self.level}: {where}: {self.message}"


@dataclass
class ValidationReport:
    root: str
    splits: dict[str, dict] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def add(self, level: str, path: Path | str, message: str, sample_id: str | None = None) -> None:
        self.findings.append(Finding(level, str(path), message, sample_id))


def validate_release(root: str | os.PathLike, strict: bool = False) -> ValidationReport:
    """An integrity report of a release folder: it never stops at the first problem."""
    root = Path(root)
    report = ValidationReport(str(root))
    if not root.is_dir():
        raise DatasetError("release folder not found", path=str(root))
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        raise DatasetError("no train/, val/ or test/ folder found", path=str(root),
                           hint="point at the folder that holds the split folders")
    for split in SPLITS:
        if split not in present and _is_symlink_loop(root / split):
            report.add("error", root / split, "is a symlink loop")
        elif split not in present:
            report.add("warning", root / split, "split folder missing")
    for split in present:
        _validate_split(root / split, split, strict, report)
    _validate_manifest(root, report)
    return report


def _validate_split(folder: Path, split: str, strict: bool, report: ValidationReport) -> None:
    stats = {"count": 0, "expected": EXPECTED_COUNTS[split], "short": 0, "long": 0, "texts": 0,
             "empty_gt": 0, "cp1252": 0}
    report.splits[split] = stats
    entries = sorted(folder.iterdir())
    for looped in (p for p in entries if p.is_symlink() and _is_symlink_loop(p)):
        report.add("error", looped, "is a symlink loop", looped.stem)
    files = [p for p in entries if p.is_file()]
    images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    jsons = {p.stem: p for p in files if p.suffix == ".json"}
    for stem in sorted(set(jsons) - set(images)):
        report.add("error", jsons[stem], "annotation has no image beside it", stem)
    for stem in sorted(set(images) - set(jsons)):
        report.add("error", images[stem], "image has no annotation JSON beside it", stem)
    for stem in sorted(set(images) & set(jsons)):
        image_path, json_path = images[stem], jsons[stem]
        if image_path.suffix != ".jpg":
            report.add("error" if strict else "warning", image_path,
                       "not a .jpg: the reference loader will not see this image", stem)
        try:
            height, width = image_size(image_path)
            _check_image_decodes(image_path)
        except DatasetError as exc:
            report.add("error", image_path, exc.message, stem)
            continue
        try:
            sample = parse_sample(split, image_path, json_path, height, width)
        except DatasetError as exc:
            report.add("error", json_path, exc.message + (f" (field {exc.field})" if exc.field else ""), stem)
            continue
        stats["count"] += 1
        stats["long" if sample.is_sentence else "short"] += 1
        stats["texts"] += len(sample.texts)
        _validate_sample(sample, stats, report)
    if stats["count"] != stats["expected"]:
        report.add("warning", folder, f"{stats['count']} samples, the ReasonSeg release has {stats['expected']}")


def _is_symlink_loop(path: Path) -> bool:
    try:
        path.stat()
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _check_image_decodes(path: Path) -> None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.format == "JPEG":
                    # Decoded at 1/8 scale: every byte of the stream is still read, at 1/64 of the memory.
                    img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
                elif img.width * img.height > MAX_DECODED_CHECK_PIXELS:
                    img.verify()  # every chunk read and its checksum checked, no pixel buffer
                    return
                img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the image does not open
        raise DatasetError(f"image does not decode: {exc}", path=str(path)) from None


def _validate_sample(sample: Sample, stats: dict, report: ValidationReport) -> None:
    from .masks import rasterize_shapes_cropped

    path, sid = sample.json_path, sample.id
    if sample.encoding != "utf-8":
        stats["cp1252"] += 1
        report.add("warning", path, "not UTF-8: read as cp1252 (as the reference does); re-save as UTF-8", sid)
    if not sample.texts:
        report.add("error", path, "'text' is empty: the lisa protocol scores text[0]", sid)
    elif any(not t.strip() for t in sample.texts):
        report.add("warning", path, "a text is blank", sid)
    for k, shape in enumerate(sample.shapes):
        label = shape.label.lower()
        if label not in KNOWN_LABELS and "ignore" not in label:
            report.add("warning", path, f"shapes[{k}] has unknown label {shape.label!r}: drawn as target", sid)
        if not shape.is_flag and len(shape.points) < 3:
            report.add("warning", path, f"shapes[{k}] has {len(shape.points)} point(s): not a polygon", sid)
    _, _, crop = rasterize_shapes_cropped(sample.shapes, sample.height, sample.width)
    if not (crop == 1).any():
        stats["empty_gt"] += 1
        report.add("warning", path, "empty ground truth: no target pixel (scores 1.0 only for an empty "
                   "prediction under lisa)", sid)


def _validate_manifest(root: Path, report: ValidationReport) -> None:
    try:
        manifest = read_manifest(root)
    except DatasetError as exc:
        report.add("error", root / MANIFEST, exc.message)
        return
    if manifest is None:
        report.add("warning", root / MANIFEST, "no manifest: checksums cannot be verified "
                   "(the public release has none; `reasonseg` releases do)")
        return
    for rel, expected in manifest.get("files", {}).items():
        path = root / rel
        try:
            inside = path.resolve().is_relative_to(root.resolve())
        except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError on a symlink loop
            report.add("error", path, "is a symlink loop")
            continue
        if not inside:
            report.add("error", root / MANIFEST, f"manifest names a file outside the release: {rel!r}")
        elif not path.is_file():
            report.add("error", path, "listed in the manifest but missing")
        elif sha256_file(path) != expected:
            report.add("error", path, "checksum differs from the manifest: the file changed after release")
