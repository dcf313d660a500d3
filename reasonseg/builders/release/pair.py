"""Build one image-instruction-mask pair: the worker side of `build reasonseg`.

A `Job` is self-contained (paths and values, no pixels), so it can run in this process or in a worker. What a
job costs is kept to what the pair needs:
- the image is never decoded: its original JPEG bytes are copied and its size read from the header;
- masks are decoded at their own size (1-bit PNGs by OpenCV), OR-ed there, and resized once per size;
- archives stay open between masks (`ZipCache`);
- polygons and the fidelity check run on the bounding box of the masks (plus a margin), not the image;
- the sha256 of every written file is computed from the bytes in memory, for the release manifest.
`reasonseg.builders.release.naive` does the same pair the obvious way; both must give identical bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BuildError, DatasetError, ReasonSegError
from ...schema import Shape


@dataclass
class Job:
    """Everything one worker needs to write one sample: paths and values, no pixels."""

    name: str
    split: str
    line: int
    source: str
    source_id: str
    image: tuple[str, str]  # ("file", path) | ("sens", "path::frame")
    targets: list[tuple]  # ("binary", loc) | ("value", loc, v) | ("polygon", points)
    ignore: list[tuple]
    texts: list[str]
    is_sentence: bool
    source_doc: dict
    out_dir: str
    explanation: str | None = None


def problem_record(job: Job, exc: ReasonSegError) -> dict:
    return {"line": job.line, "problem": {"line": job.line, "id": job.source_id, "field": exc.field,
                                          "path": exc.path, "message": exc.message
                                          + (f" ({exc.hint})" if exc.hint else "")}}


def read_image_bytes(job: Job) -> bytes:
    from .scannet import read_color

    kind, where = job.image
    try:
        return read_color(job.image) if kind == "sens" else Path(where).read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read the image: {exc.strerror}", path=where) from None


def jpeg_of(data: bytes, where: str) -> tuple[bytes, bool]:
    """The image as JPEG bytes: the original bytes when they already are JPEG (re-encoded = False)."""
    import cv2

    if data[:3] == b"\xff\xd8\xff":
        return data, False
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BuildError("image does not decode", path=where)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise BuildError("image does not encode as JPEG", path=where)
    return encoded.tobytes(), True


def jpeg_size(jpeg: bytes, where: str) -> tuple[int, int]:
    """(height, width) as the reference's cv2.imread sees them (EXIF orientation applied), from the header."""
    from ...dataset import image_size

    try:
        return image_size(io.BytesIO(jpeg))  # type: ignore[arg-type]  # Pillow opens file objects too
    except DatasetError as exc:
        raise BuildError(exc.message, path=where) from None


def _decoded(spec: tuple, cache: dict, zips) -> tuple[np.ndarray, str]:
    """One mask spec as a boolean mask at the source's own size, and where it came from."""
    from .openimages import decode_mask, read_location_bytes
    from .scannet import read_label_png

    loc = spec[1]
    where = loc[1]
    if spec[0] == "binary":
        return decode_mask(read_location_bytes(loc, zips), where), where
    if loc not in cache:
        cache[loc] = read_label_png(loc, zips)
    mask = cache[loc] == spec[2]
    if not mask.any():
        raise BuildError(f"value {spec[2]} does not occur in this frame's {Path(where.split('::')[-1]).parent}"
                         f" image", path=where, field="targets")
    return mask, where


def region(specs: list[tuple], height: int, width: int, label: str, cache: dict, zips=None
           ) -> tuple[np.ndarray, list[Shape]]:
    """Union of the mask specs at the image size, and the explicit polygons (kept as shapes).

    Masks of one size are OR-ed at that size and resized once: nearest-neighbour resizing picks source pixels,
    so it commutes with the union.
    """
    from ...masks import resize_mask
    from .openimages import check_mask_size

    by_size: dict[tuple[int, int], np.ndarray] = {}
    shapes: list[Shape] = []
    for spec in specs:
        if spec[0] == "polygon":
            shapes.append(Shape(label, tuple(map(tuple, spec[1]))))
            continue
        mask, where = _decoded(spec, cache, zips)
        check_mask_size(mask.shape, height, width, where)
        if mask.shape in by_size:
            by_size[mask.shape] |= mask
        else:
            by_size[mask.shape] = mask.copy()
    out = np.zeros((height, width), bool)
    for (mh, mw), union in by_size.items():
        out |= union if (mh, mw) == (height, width) else resize_mask(union.view(np.uint8), height, width) != 0
    return out, shapes


def write_sample(job: Job, jpeg: bytes, reencoded: bool, height: int, width: int, shapes: list[dict],
                 fidelity) -> dict:
    """Write the pair's image and JSON; return its record (with the sha256 of both files)."""
    doc = {"text": job.texts, "is_sentence": job.is_sentence, "shapes": shapes, "source": job.source_doc,
           "imagePath": f"{job.name}.jpg", "imageHeight": height, "imageWidth": width}
    data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    folder = Path(job.out_dir) / job.split
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{job.name}.jpg"
    try:
        image_path.write_bytes(jpeg)
        (folder / f"{job.name}.json").write_bytes(data)
    except BaseException:
        image_path.unlink(missing_ok=True)
        raise
    record = {"line": job.line, "name": job.name, "split": job.split, "source": job.source, "id": job.source_id,
              "is_sentence": job.is_sentence, "iou": fidelity.iou, "cause": fidelity.cause, "lost": fidelity.lost,
              "shapes": len(shapes), "points": sum(len(s["points"]) for s in shapes), "reencoded": reencoded,
              "size": [height, width],
              "files": [[f"{job.split}/{job.name}.jpg", "sha256:" + hashlib.sha256(jpeg).hexdigest()],
                        [f"{job.split}/{job.name}.json", "sha256:" + hashlib.sha256(data).hexdigest()]]}
    if job.split == "train" and job.explanation:
        record["query"], record["explanation"] = job.texts[0], job.explanation
    return record


def run_job(job: Job, zips=None) -> dict:
    """Write one sample's image and JSON; return its record (or its problem). Nothing is written on error."""
    try:
        return _run_job(job, zips)
    except ReasonSegError as exc:
        return problem_record(job, exc)


def _run_job(job: Job, zips) -> dict:
    from ...masks import rasterize_shapes
    from .polygons import crop_box, polygonize

    jpeg, reencoded = jpeg_of(read_image_bytes(job), job.image[1])
    height, width = jpeg_size(jpeg, job.image[1])
    cache: dict = {}
    target, target_polys = region(job.targets, height, width, "target", cache, zips)
    ignore, ignore_polys = region(job.ignore, height, width, "ignore", cache, zips)
    extra = target_polys + ignore_polys
    if extra:
        drawn = rasterize_shapes(extra, height, width)
        full_target, full_ignore = target | (drawn == 1), ignore | (drawn == 255)
    else:
        full_target, full_ignore = target, ignore
    if not (full_target & ~full_ignore).any():
        raise BuildError("the targets cover no pixel outside the ignore regions", field="targets")
    x0, y0, x1, y1 = crop_box(full_target | full_ignore)
    window = (slice(y0, y1), slice(x0, x1))
    has_ignore = bool(ignore.any())
    shapes, fidelity = polygonize(target[window], ignore[window] if has_ignore else None, extra,
                                  full_target=full_target[window], full_ignore=full_ignore[window],
                                  origin=(x0, y0), image_size=(height, width))
    return write_sample(job, jpeg, reencoded, height, width, shapes, fidelity)
