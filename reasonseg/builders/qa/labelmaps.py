"""Shared reading of semantic label maps (ADE20K, COCO-Stuff): one PNG per image, one class value per pixel."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .items import QASourceError, Target


def read_label_png(path: Path, item_id: str) -> np.ndarray:
    """The label values of an 8-bit single-channel PNG (grey or indexed), exactly as stored.

    PIL is used rather than OpenCV because OpenCV expands an indexed (palette) PNG into colours, and label maps must
    be read as indices (docs/formats.md §10).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise QASourceError("annotation PNG not found", path=str(path), sample_id=item_id,
                            hint="every image needs its label map with the same stem")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise QASourceError(f"label map is PIL mode {img.mode!r}, expected 8-bit grey 'L' or indexed 'P'",
                                    path=str(path), sample_id=item_id)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise QASourceError(f"label map does not decode: {exc}", path=str(path), sample_id=item_id) from None


def present_values(label: np.ndarray) -> np.ndarray:
    """The distinct values of a uint8 label map, ascending (a 256-bin histogram: one pass, no sort)."""
    import cv2

    if label.size == 0:
        return np.zeros(0, np.int64)
    hist = cv2.calcHist([np.ascontiguousarray(label)], [0], None, [256], [0, 256]).ravel()
    return np.flatnonzero(hist)


def column_major(label: np.ndarray) -> np.ndarray:
    """The label map in Fortran (column-major) order, the order of COCO RLE: a comparison against it gives a mask
    that pycocotools encodes without copying (the per-mask transpose otherwise dominates the build time)."""
    return np.asfortranarray(label)


def class_targets(values, names: dict[int, str]) -> list[Target]:
    """One class target per label value, in value order; the mask key is the stored pixel value."""
    return [Target(names[int(v)], "class", int(v)) for v in values]
