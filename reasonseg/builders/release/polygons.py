"""Masks → ReasonSeg polygons, and the fidelity check that draws them back the LISA way.

ReasonSeg stores ground truth as polygons, which the reference fills with int32-truncated points, a 1-px outline
and `fillPoly` (docs/protocol.md §2). Outer contours through boundary-pixel centres reproduce a hole-free mask exactly;
shapely simplification drops collinear staircase points, and validity repair splits self-touching outlines. What
polygons cannot carry (holes, one-pixel-wide parts, isolated specks) is measured and named by `diagnose`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...masks import rasterize_shapes_cropped
from ...schema import Shape

FIDELITY_THRESHOLD = 0.98
# Douglas-Peucker tolerances tried in order (pixels): the first whose redraw is faithful enough wins.
TOLERANCES = (1.0, 0.5, 0.0)
# Background pixels kept around a crop (>= 2: the 3x3 opening in `diagnose` must see the true border).
CROP_MARGIN = 2


@dataclass(frozen=True)
class Fidelity:
    """How well the polygons redraw the source mask: IoU outside ignore pixels, and the likely cause of loss."""

    iou: float
    cause: str | None
    lost: dict[str, int]  # pixels of disagreement by cause

    @property
    def needs_review(self) -> bool:
        return self.iou < FIDELITY_THRESHOLD


def _contour_points(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE, offset=origin)
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
    coords = np.asarray(polygon.exterior.coords)[:-1]  # shapely closes rings; LISA closes them itself
    if np.all(coords == np.floor(coords)):
        return coords.astype(np.int64).tolist()
    return [[_plain(x), _plain(y)] for x, y in coords.tolist()]


def _plain(v: float) -> float | int:
    # Contour vertices are integers: keep them so, which keeps the JSON short and exact.
    return int(v) if float(v).is_integer() else round(float(v), 3)


def valid_parts(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> list:
    """The mask's outer contours as valid shapely polygons (self-touching outlines repaired), in image
    coordinates: `mask` may be a crop whose top-left pixel is `origin` (x, y) of the image."""
    from shapely import make_valid
    from shapely.geometry import Polygon

    parts = []
    for pts in _contour_points(mask, origin):
        if len(pts) < 3:
            continue  # a speck of one or two pixels: no polygon (reported by diagnose)
        polygon = Polygon(pts)
        parts.extend([polygon] if polygon.is_valid else _polygonal_parts(make_valid(polygon)))
    return parts


def rings_of(parts: Sequence, tolerance: float) -> list[list[list[float]]]:
    """Rings of `valid_parts`, simplified (topology kept), sorted (largest area first, then by first vertex) so
    the output does not depend on OpenCV's order."""
    rings = []
    for part in parts:
        if tolerance > 0:
            part = part.simplify(tolerance, preserve_topology=True)
        for piece in _polygonal_parts(part):
            ring = _ring(piece)
            if len(ring) >= 3:
                rings.append((-piece.area, tuple(ring[0]), ring))
    rings.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rings]


def mask_to_rings(mask: np.ndarray, tolerance: float, origin: tuple[int, int] = (0, 0)
                  ) -> list[list[list[float]]]:
    """Outer rings of the mask's connected parts, simplified (topology kept) and repaired to valid polygons."""
    return rings_of(valid_parts(mask, origin), tolerance)


def shapes_for(target_rings: Sequence, ignore_rings: Sequence) -> list[Shape]:
    return ([Shape("target", tuple(map(tuple, r))) for r in target_rings]
            + [Shape("ignore", tuple(map(tuple, r))) for r in ignore_rings])


def redraw_iou(shapes: Sequence[Shape], target: np.ndarray, ignore: np.ndarray | None,
               origin: tuple[int, int] = (0, 0), image_size: tuple[int, int] | None = None
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """IoU of the redrawn target (value 1) against the source target, outside the source's ignore pixels.

    `target`/`ignore` may be a crop at `origin` (x, y) of an image of `image_size` (default: the masks are the
    whole image) holding every source pixel. The redraw is rasterized on its own bounding box
    (`rasterize_shapes_cropped`, exact), and both are compared on the box holding both, so the cost follows
    the object, not the image. Returns (iou, disagreeing pixels, source target), the last two on that box.
    """
    height, width = image_size or target.shape
    ox, oy = origin
    ch, cw = target.shape
    dx, dy, drawn_crop = rasterize_shapes_cropped(shapes, height, width)
    x0, y0, x1, y1 = ox, oy, ox + cw, oy + ch
    if drawn_crop.size:
        x0, y0 = min(x0, dx), min(y0, dy)
        x1, y1 = max(x1, dx + drawn_crop.shape[1]), max(y1, dy + drawn_crop.shape[0])
    box = (y1 - y0, x1 - x0)
    source = np.zeros(box, bool)
    source[oy - y0:oy - y0 + ch, ox - x0:ox - x0 + cw] = target
    drawn = np.zeros(box, bool)
    if drawn_crop.size:
        drawn[dy - y0:dy - y0 + drawn_crop.shape[0], dx - x0:dx - x0 + drawn_crop.shape[1]] = drawn_crop == 1
    valid = np.ones(box, bool)
    if ignore is not None:
        valid[oy - y0:oy - y0 + ch, ox - x0:ox - x0 + cw] = ~ignore.astype(bool)
    inter = int(np.count_nonzero(drawn & source & valid))
    union = int(np.count_nonzero((drawn | source) & valid))
    iou = 1.0 if union == 0 else inter / union
    return iou, (drawn ^ source) & valid, source


def crop_box(mask: np.ndarray, margin: int = CROP_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the bounding box of the mask's pixels grown by `margin` background pixels, clipped to
    the image. The margin keeps contours, the 3x3 opening of `diagnose` and connected components exactly what
    they are on the whole image. An empty mask gives an empty box."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return 0, 0, 0, 0
    h, w = mask.shape
    return (max(int(cols[0]) - margin, 0), max(int(rows[0]) - margin, 0),
            min(int(cols[-1]) + 1 + margin, w), min(int(rows[-1]) + 1 + margin, h))


def polygonize(target: np.ndarray, ignore: np.ndarray | None = None, extra: Sequence[Shape] = (), *,
               full_target: np.ndarray | None = None, full_ignore: np.ndarray | None = None,
               origin: tuple[int, int] = (0, 0), image_size: tuple[int, int] | None = None,
               diagnose_all: bool = False) -> tuple[list[dict], Fidelity]:
    """ReasonSeg `shapes` for a target mask (and an ignore mask), with their fidelity.

    `extra` are shapes given explicitly and kept verbatim; `full_target`/`full_ignore` (default: the masks)
    are what the redraw is checked against, i.e. the masks together with what `extra` covers. All masks may be
    the same crop (`crop_box` of everything) at `origin` of an image of `image_size`: the result is the same as
    for the whole image. The loss is diagnosed only for pairs below the threshold (`diagnose_all`: always),
    since only those show it in the report.
    """
    full_target = target if full_target is None else full_target
    full_ignore = ignore if full_ignore is None else full_ignore
    size = image_size or target.shape
    ignore_rings = mask_to_rings(ignore, 0.5, origin) if ignore is not None and ignore.any() else []
    best = None
    parts = valid_parts(target, origin)  # contours and repairs do not depend on the tolerance: made once
    for tolerance in TOLERANCES:
        rings = rings_of(parts, tolerance)
        shapes = list(extra) + shapes_for(rings, ignore_rings)
        iou, errors, source = redraw_iou(shapes, full_target, full_ignore, origin, size)
        if best is None or iou > best[0]:
            best = (iou, shapes, errors, source)
        if iou >= FIDELITY_THRESHOLD:
            break
    iou, shapes, errors, source = best
    lost = diagnose(source, errors) if (diagnose_all or iou < FIDELITY_THRESHOLD) and errors.any() else {}
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
