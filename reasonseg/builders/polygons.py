"""Masks → ReasonSeg polygons, and the fidelity check that draws them back the LISA way.

ReasonSeg stores ground truth as polygons, which the reference fills with int32-truncated points, a 1-px outline
and `fillPoly` (protocol.md §2). Outer contours through boundary-pixel centres reproduce a hole-free mask exactly;
shapely simplification drops collinear staircase points, and validity repair splits self-touching outlines. What
polygons cannot carry (holes, one-pixel-wide parts, isolated specks) is measured and named by `diagnose`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..masks import rasterize_shapes
from ..schema import Shape

FIDELITY_THRESHOLD = 0.98
# Douglas-Peucker tolerances tried in order (pixels): the first whose redraw is faithful enough wins.
TOLERANCES = (1.0, 0.5, 0.0)


@dataclass(frozen=True)
class Fidelity:
    """How well the polygons redraw the source mask: IoU outside ignore pixels, and the likely cause of loss."""

    iou: float
    cause: str | None
    lost: dict[str, int]  # pixels of disagreement by cause

    @property
    def needs_review(self) -> bool:
        return self.iou < FIDELITY_THRESHOLD


def _contour_points(mask: np.ndarray) -> list[np.ndarray]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1, 2) for c in contours]


def _polygonal_parts(geometry) -> list:
    """The polygons in a shapely geometry (make_valid can return collections with lines and points)."""
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    if isinstance(geometry, MultiPolygon):
        return [g for g in geometry.geoms if not g.is_empty]
    parts = []
    for g in getattr(geometry, "geoms", ()):
        parts.extend(_polygonal_parts(g))
    return parts


def _ring(polygon) -> list[list[float]]:
    coords = list(polygon.exterior.coords)[:-1]  # shapely closes rings; LISA closes them itself
    return [[_plain(x), _plain(y)] for x, y in coords]


def _plain(v: float) -> float | int:
    # Contour vertices are integers: keep them so, which keeps the JSON short and exact.
    return int(v) if float(v).is_integer() else round(float(v), 3)


def mask_to_rings(mask: np.ndarray, tolerance: float) -> list[list[list[float]]]:
    """Outer rings of the mask's connected parts, simplified (topology kept) and repaired to valid polygons.

    Rings are sorted (largest area first, then by first vertex) so the output does not depend on OpenCV's order.
    """
    from shapely import make_valid
    from shapely.geometry import Polygon

    rings = []
    for pts in _contour_points(mask):
        if len(pts) < 3:
            continue  # a speck of one or two pixels: no polygon (reported by diagnose)
        polygon = Polygon(pts)
        parts = [polygon] if polygon.is_valid else _polygonal_parts(make_valid(polygon))
        for part in parts:
            if tolerance > 0:
                part = part.simplify(tolerance, preserve_topology=True)
            for piece in _polygonal_parts(part):
                ring = _ring(piece)
                if len(ring) >= 3:
                    rings.append((-piece.area, ring[0], ring))
    rings.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rings]


def shapes_for(target_rings: Sequence, ignore_rings: Sequence) -> list[Shape]:
    return ([Shape("target", tuple(map(tuple, r))) for r in target_rings]
            + [Shape("ignore", tuple(map(tuple, r))) for r in ignore_rings])


def redraw_iou(shapes: Sequence[Shape], target: np.ndarray, ignore: np.ndarray | None) -> tuple[float, np.ndarray]:
    """IoU of the redrawn target (value 1) against the source target, outside the source's ignore pixels."""
    h, w = target.shape
    drawn = rasterize_shapes(shapes, h, w) == 1
    source = target.astype(bool)
    valid = ~ignore.astype(bool) if ignore is not None else np.ones_like(source)
    inter = int(np.count_nonzero(drawn & source & valid))
    union = int(np.count_nonzero((drawn | source) & valid))
    iou = 1.0 if union == 0 else inter / union
    return iou, (drawn ^ source) & valid


def polygonize(target: np.ndarray, ignore: np.ndarray | None = None, extra: Sequence[Shape] = (), *,
               full_target: np.ndarray | None = None, full_ignore: np.ndarray | None = None
               ) -> tuple[list[dict], Fidelity]:
    """ReasonSeg `shapes` for a target mask (and an ignore mask), with their fidelity.

    `extra` are shapes given explicitly and kept verbatim; `full_target`/`full_ignore` (default: the masks)
    are what the redraw is checked against, i.e. the masks together with what `extra` covers.
    """
    full_target = target if full_target is None else full_target
    full_ignore = ignore if full_ignore is None else full_ignore
    ignore_rings = mask_to_rings(ignore, 0.5) if ignore is not None and ignore.any() else []
    best = None
    for tolerance in TOLERANCES:
        rings = mask_to_rings(target, tolerance)
        shapes = list(extra) + shapes_for(rings, ignore_rings)
        iou, errors = redraw_iou(shapes, full_target, full_ignore)
        if best is None or iou > best[0]:
            best = (iou, shapes, errors)
        if iou >= FIDELITY_THRESHOLD:
            break
    iou, shapes, errors = best
    lost = diagnose(full_target, errors) if errors.any() else {}
    cause = max(lost, key=lambda k: (lost[k], k)) if iou < FIDELITY_THRESHOLD and lost else None
    docs = [{"label": s.label, "points": [[_plain(x), _plain(y)] for x, y in s.points], "group_id": None,
             "shape_type": "polygon", "flags": {}} for s in shapes]
    return docs, Fidelity(round(iou, 6), cause, lost)


def diagnose(target: np.ndarray, errors: np.ndarray) -> dict[str, int]:
    """Attribute the disagreeing pixels to holes, thin parts, specks, or the outline (simplification)."""
    import cv2

    source = target.astype(np.uint8)
    filled = np.zeros_like(source)
    contours, _ = cv2.findContours(source, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    holes = (filled == 1) & (source == 0)
    opened = cv2.morphologyEx(source, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    thin = cv2.dilate(((source == 1) & (opened == 0)).astype(np.uint8), np.ones((3, 3), np.uint8)) == 1
    n, labels, stats, _ = cv2.connectedComponentsWithStats(source, connectivity=8)
    specks = np.isin(labels, [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] <= 2])
    lost: dict[str, int] = {}
    remaining = errors.copy()
    for name, region in (("holes", holes), ("specks", specks), ("thin parts", thin)):
        count = int(np.count_nonzero(remaining & region))
        if count:
            lost[name] = count
            remaining &= ~region
    if remaining.any():
        lost["outline"] = int(np.count_nonzero(remaining))
    return lost
