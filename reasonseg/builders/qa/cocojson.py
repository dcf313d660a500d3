"""COCO-style annotations shared by the refer, PACO-LVIS and PASCAL-Part readers: JSON loading and segmentation
decoding (polygons, compressed or uncompressed RLE, refclef's lists of RLEs)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import MaskError
from ...masks import rle_counts
from .items import QASourceError


def read_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise QASourceError(f"{what} not found", path=str(path))
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QASourceError(f"{what} is not valid JSON: {exc}", path=str(path)) from None


def index_coco(data: object, path: Path, need: tuple[str, ...] = ("images", "annotations", "categories")
               ) -> tuple[dict[int, dict], dict[int, dict], dict[int, list[dict]], dict[int, dict]]:
    """(images by id, annotations by id, annotations by image id, categories by id), checked for shape."""
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in need):
        raise QASourceError(f"expected a COCO-style object with lists {', '.join(need)}", path=str(path))
    tables = []
    for key in ("images", "annotations", "categories"):
        rows = data.get(key) or []
        if not all(isinstance(r, dict) and isinstance(r.get("id"), int) for r in rows):
            raise QASourceError(f"every entry of '{key}' must be an object with an integer 'id'", path=str(path),
                                field=key)
        tables.append({r["id"]: r for r in rows})
    images, anns, cats = tables
    by_image: dict[int, list[dict]] = {}
    for ann in anns.values():
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    return images, anns, by_image, cats


OVERLAPS = ("sum", "clip")
# Coordinates beyond this make pycocotools' polygon rasteriser allocate without bound (it walks every edge pixel).
MAX_COORDINATE = 1e5


def _polygons(segmentation: list, where: str, path: Path) -> list[list[float]]:
    """Polygon lists as floats, refusing what would make pycocotools' C code misbehave (non-numbers, NaN, huge)."""
    try:
        out = [[float(v) for v in p] for p in segmentation]
    except (TypeError, ValueError):
        raise QASourceError("polygon coordinates must be numbers", path=str(path), sample_id=where,
                            field="segmentation") from None
    if any(not np.isfinite(v) or abs(v) > MAX_COORDINATE for p in out for v in p):
        raise QASourceError(f"polygon coordinate is not finite or beyond {MAX_COORDINATE:g}", path=str(path),
                            sample_id=where, field="segmentation")
    return out


def segmentation_mask(segmentation: object, height: int, width: int, where: str, path: Path,
                      overlap: str = "clip") -> np.ndarray:
    """The H x W mask of a COCO segmentation: its parts decoded by pycocotools and combined.

    Polygons go to `frPyObjects` as they are, so short ones decode as pycocotools decodes them (a first polygon of
    4 numbers is read as boxes, an odd count drops its last number). `overlap="sum"` adds the parts as the
    reference's refer loader does (2 where polygons overlap); `"clip"` unites them (0/1, what COCO's `annToMask`
    gives and what an RLE can hold).
    """
    from pycocotools import mask as cocomask

    if isinstance(segmentation, list) and not segmentation:
        return np.zeros((height, width), np.uint8)
    try:
        if isinstance(segmentation, dict):
            parts = [segmentation]
        elif isinstance(segmentation, list) and all(isinstance(p, dict) for p in segmentation):
            parts = segmentation
        elif isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
            rles = cocomask.frPyObjects(_polygons(segmentation, where, path), height, width)
            return _combine(cocomask.decode(rles if isinstance(rles, list) else [rles]), overlap)
        else:
            raise QASourceError("segmentation must be polygons, an RLE or a list of RLEs", path=str(path),
                                sample_id=where, field="segmentation")
        rles = []
        for part in parts:
            counts, size = part.get("counts"), part.get("size")
            if list(size or []) != [height, width]:
                raise QASourceError(f"RLE size {size} differs from the image size {[height, width]}",
                                    path=str(path), sample_id=where, field="segmentation")
            if isinstance(counts, list):
                rles.append(cocomask.frPyObjects(part, height, width))
            elif isinstance(counts, (str, bytes)):
                rle_counts(part)  # pycocotools trusts its input; a malformed string must not reach it
                rles.append({"size": [height, width],
                             "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
            else:
                raise QASourceError("RLE counts must be a string or a list", path=str(path), sample_id=where,
                                    field="segmentation")
        return _combine(cocomask.decode(rles), overlap)
    except QASourceError:
        raise
    except MaskError as exc:
        raise QASourceError(f"segmentation RLE is malformed: {exc.message}", path=str(path), sample_id=where,
                            field="segmentation") from None
    except Exception as exc:  # noqa: BLE001 - pycocotools raises bare Exception for input it does not support
        raise QASourceError(f"segmentation does not decode: {exc}", path=str(path), sample_id=where,
                            field="segmentation") from None


def _combine(stack: np.ndarray, overlap: str) -> np.ndarray:
    if overlap == "sum":
        return stack.sum(axis=2).astype(np.uint8)
    return (stack.max(axis=2) > 0).view(np.uint8)
