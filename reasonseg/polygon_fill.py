"""One LISA polygon drawn exactly as OpenCV 4.8 draws it, in numpy: the same mask whatever OpenCV is installed.

LISA draws each ground-truth polygon with `cv2.polylines(mask, [pts], True, value, 1)` and then
`cv2.fillPoly(mask, [pts], value)` on int32 points, under the `opencv_python==4.8.0.74` its environment pins.
OpenCV 4.11 changed how `fillPoly` places polygon edges, so a current OpenCV draws another mask for most polygons.
This module restates what 4.8 computes, integer for integer, for that one call pattern (8-connected, thickness 1,
no sub-pixel shift), on int32 points of a height x width image:

- Outline. Each edge, from the previous point to the next (the closing edge too), is an 8-connected Bresenham line.
  An edge with an end outside the image is first clipped to it by 4.8's `clipLine` (Cohen-Sutherland; each move
  of an end is `(a - y1) * (x2 - x1) / (y2 - y1)` computed in double precision and truncated toward zero; the ends
  are then cast back to int32); a line it reports as missing the image draws nothing. The line is stepped from
  its left end (from its first point when vertical): one pixel a step along the major axis, and a step along the
  minor axis when the error term is negative, which puts the k-th pixel `ceil((2*minor*k - major) / (2*major))`
  minor steps away. `fillPoly` draws the same lines again, so the outline is drawn once here.
- Fill. Every edge that is not horizontal covers rows [y_top, y_bottom) with x in 16.16 fixed point. An edge with
  both ends in the image runs half a pixel right of its points (x + 1/2); an edge with an end outside takes its
  ends from the clipped segment (no half) when that segment is not horizontal, and its own unclipped ends (no half)
  otherwise. Its per-row step is the fixed-point x difference over the y difference, truncated toward zero, and its
  x on its top row is extrapolated from its first end with that step. On each row the crossings, sorted by x, pair
  up (even-odd), and a pair fills columns floor(left) .. floor(right), clipped to the image. A polygon with fewer
  than two such edges fills nothing, and neither does one whose edges' x at their ends all lie left of the image
  (or all right of it): OpenCV takes an edge's far-end x with its row count in int, so an edge of 2**31 rows or
  more wraps there and can make a polygon that crosses the image look wholly off it. (OpenCV 5.1 adds no half
  pixel and fills from ceil(left).)
Rows above and below the window drawn are never visited, so a vertex at y = -1e9 costs nothing. int64 overflow
wraps as it does in OpenCV's C++.
"""
from __future__ import annotations

import numpy as np

_XY_SHIFT = 16               # OpenCV's fixed-point fraction bits for polygon edges
_HALF = 1 << (_XY_SHIFT - 1)


def draw_polygon(canvas: np.ndarray, points: np.ndarray, value: int, height: int, width: int,
                 x0: int = 0, y0: int = 0) -> None:
    """Set the pixels OpenCV 4.8's closed 1-px polyline plus fillPoly set for `points` (n x 2 int32, image
    coordinates) on a height x width image, in `canvas`: the window of that image whose top-left pixel is (x0, y0).

    Clipping follows the whole image, not the window, so any window gives the full drawing's pixels.
    """
    pts = np.asarray(points, np.int32).reshape(-1, 2).astype(np.int64)
    if len(pts) == 0 or height <= 0 or width <= 0:
        return
    if canvas.dtype != np.uint8 or not canvas.flags.c_contiguous:
        raise ValueError("draw_polygon needs a C-contiguous uint8 canvas (it writes bytes through a flat view)")
    flat = canvas.reshape(-1)
    win_h, win_w = canvas.shape
    x_b, y_b = pts[:, 0], pts[:, 1]
    x_a, y_a = np.concatenate((x_b[-1:], x_b[:-1])), np.concatenate((y_b[-1:], y_b[:-1]))  # edge i: point i-1 to i
    off = _outside(x_b, y_b, width, height)
    outside = off | np.concatenate((off[-1:], off[:-1]))
    clipped = _clip_segments(x_a[outside], y_a[outside], x_b[outside], y_b[outside], width, height)
    rows, left, right = _fill_spans(x_a, y_a, x_b, y_b, outside, clipped, height, width, y0, y0 + win_h)
    lo, hi = np.maximum(left, x0), np.minimum(right + 1, x0 + win_w)
    runs = lo < hi
    starts = (rows[runs] - y0) * win_w + (lo[runs] - x0)
    # One byte-slice copy per run, through memoryviews: a memset each, cheaper than any per-pixel index for the
    # long runs of a fill, and cheaper per run than numpy's slice assignment.
    view, ink = memoryview(flat), memoryview(bytes((value,)) * win_w)
    for a, n in zip(starts.tolist(), (hi - lo)[runs].tolist(), strict=True):
        view[a:a + n] = ink[:n]
    xs, ys = _outline_pixels(x_a, y_a, x_b, y_b, outside, clipped)
    keep = (xs >= x0) & (xs < x0 + win_w) & (ys >= y0) & (ys < y0 + win_h)
    flat[(ys[keep] - y0) * win_w + (xs[keep] - x0)] = value


def _ranges(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with these counts: each step's item and its index 0 .. count-1 within the item."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, np.arange(len(owner)) - (np.cumsum(counts) - counts)[owner]


def _outside(x: np.ndarray, y: np.ndarray, width: int, height: int) -> np.ndarray:
    return (x < 0) | (x >= width) | (y < 0) | (y >= height)


def _moved(d: np.ndarray, span: np.ndarray, over: np.ndarray) -> np.ndarray:
    """clipLine's step `(int64)((double)d * span / over)`: the product and quotient in double precision, truncated
    toward zero (the double keeps int32-range segments from overflowing int64)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (d.astype(np.float64) * span / np.where(over == 0, 1, over)).astype(np.int64)


def _codes(x: np.ndarray, y: np.ndarray, right: int, bottom: int) -> np.ndarray:
    return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8


def _clip_segments(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, width: int, height: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV 4.8's clipLine(Size, Point&, Point&) on many segments: the end points it leaves (int32 values, also
    for a segment that misses the image) and whether it reports the segment inside."""
    if len(x1) == 0:
        return x1, y1, x2, y2, np.zeros(0, bool)
    right, bottom = width - 1, height - 1
    c1, c2 = _codes(x1, y1, right, bottom), _codes(x2, y2, right, bottom)
    with np.errstate(over="ignore"):
        todo = ((c1 & c2) == 0) & ((c1 | c2) != 0)
        # Ends above or below the image move onto its top or bottom row (the first end first: the second
        # end's step uses the first end as moved).
        m = todo & ((c1 & 12) != 0)
        a = np.where(c1 < 8, 0, bottom)
        x1 = np.where(m, x1 + _moved(a - y1, x2 - x1, y2 - y1), x1)
        y1 = np.where(m, a, y1)
        c1 = np.where(m, _codes(x1, 0, right, bottom), c1)
        m = todo & ((c2 & 12) != 0)
        a = np.where(c2 < 8, 0, bottom)
        x2 = np.where(m, x2 + _moved(a - y2, x2 - x1, y2 - y1), x2)
        y2 = np.where(m, a, y2)
        c2 = np.where(m, _codes(x2, 0, right, bottom), c2)
        # Ends left or right of the image move onto its first or last column.
        todo &= ((c1 & c2) == 0) & ((c1 | c2) != 0)
        m = todo & (c1 != 0)
        a = np.where(c1 == 1, 0, right)
        y1 = np.where(m, y1 + _moved(a - x1, y2 - y1, x2 - x1), y1)
        x1 = np.where(m, a, x1)
        c1 = np.where(m, 0, c1)
        m = todo & (c2 != 0)
        a = np.where(c2 == 1, 0, right)
        y2 = np.where(m, y2 + _moved(a - x2, y2 - y1, x2 - x1), y2)
        x2 = np.where(m, a, x2)
        c2 = np.where(m, 0, c2)
    as_int = [v.astype(np.int32).astype(np.int64) for v in (x1, y1, x2, y2)]  # Point's int members
    return (*as_int, (c1 | c2) == 0)


def _outline_pixels(x_a, y_a, x_b, y_b, outside, clipped) -> tuple[np.ndarray, np.ndarray]:
    """Every (x, y) pixel of the edges' 8-connected lines, clipped to the image as OpenCV's LineIterator does."""
    x1, y1, x2, y2 = x_a.copy(), y_a.copy(), x_b.copy(), y_b.copy()
    cx1, cy1, cx2, cy2, inside = clipped
    x1[outside], y1[outside], x2[outside], y2[outside] = cx1, cy1, cx2, cy2
    drawn = np.ones(len(x1), bool)
    drawn[outside] = inside
    x1, y1, x2, y2 = x1[drawn], y1[drawn], x2[drawn], y2[drawn]
    swap = x2 < x1                                   # stepped left to right
    x1, x2 = np.where(swap, x2, x1), np.where(swap, x1, x2)
    y1, y2 = np.where(swap, y2, y1), np.where(swap, y1, y2)
    dx, dy = x2 - x1, y2 - y1
    y_step = np.where(dy < 0, -1, 1)
    dy = np.abs(dy)
    vertical = dy > dx
    major, minor = np.maximum(dx, dy), np.minimum(dx, dy)
    owner, k = _ranges(major + 1)
    major_o, minor_o = major[owner], minor[owner]
    # minor steps taken before pixel k: ceil((2*minor*k - major) / (2*major)); a one-pixel line takes none
    moved = (2 * minor_o * k + np.maximum(major_o - 1, 0)) // np.maximum(2 * major_o, 1)
    vert_o = vertical[owner]
    xs = x1[owner] + np.where(vert_o, moved, k)
    ys = y1[owner] + y_step[owner] * np.where(vert_o, k, moved)
    return xs, ys


def _sorted_crossings(rows: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crossings (row >= 0, x) sorted by row, then x: as one int64 key (row, x - min x) when both fit, which
    sorts about ten times faster than a lexsort of the two."""
    x_min = int(xs.min())
    x_bits = (int(xs.max()) - x_min).bit_length()
    if x_bits + int(rows.max()).bit_length() > 62:
        order = np.lexsort((xs, rows))
        return rows[order], xs[order]
    key = np.sort((rows << x_bits) | (xs - x_min))
    return key >> x_bits, (key & ((1 << x_bits) - 1)) + x_min


def _fill_spans(x_a, y_a, x_b, y_b, outside, clipped, height: int, width: int, row_lo: int, row_hi: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first column, last column) of every run fillPoly fills in rows [row_lo, row_hi), clipped to the
    image's columns; a run may be empty (first > last)."""
    none = (np.zeros(0, np.int64),) * 3
    ex_a, ex_b = (x_a << _XY_SHIFT) + _HALF, (x_b << _XY_SHIFT) + _HALF
    ey_a, ey_b = y_a, y_b
    if len(clipped[0]):
        cx1, cy1, cx2, cy2, _ = clipped
        slanted = cy1 != cy2                 # the clipped segment is not horizontal: its ends place the edge
        ex_a[outside] = np.where(slanted, cx1, x_a[outside]) << _XY_SHIFT
        ex_b[outside] = np.where(slanted, cx2, x_b[outside]) << _XY_SHIFT
        ey_a, ey_b = y_a.copy(), y_b.copy()
        ey_a[outside] = np.where(slanted, cy1, y_a[outside])
        ey_b[outside] = np.where(slanted, cy2, y_b[outside])
    keep = y_a != y_b
    if np.count_nonzero(keep) < 2:
        return none
    ya, yb, ex_a, ey_a, ex_b, ey_b = y_a[keep], y_b[keep], ex_a[keep], ey_a[keep], ex_b[keep], ey_b[keep]
    with np.errstate(over="ignore"):
        # Truncated toward zero; exact in double: |dx| < 2**49, so the quotient's rounding error stays below the
        # 1/|dy| that separates a non-integer quotient from the nearest integer.
        slope = ((ex_b - ex_a) / (ey_b - ey_a)).astype(np.int64)
        down = ya < yb
        top, bottom = np.minimum(ya, yb), np.maximum(ya, yb)
        ref_x, ref_y = np.where(down, ex_a, ex_b), np.where(down, ey_a, ey_b)
        x_top = ref_x + (top - ref_y) * slope
        # OpenCV's x at an edge's far end takes its row count `y1 - y0` in int (both ends are int), so a span of
        # 2**31 rows or more wraps negative, and that x lands far off the image.
        x_bottom = x_top + (bottom - top).astype(np.int32) * slope
        # OpenCV returns early when every edge lies off the image by those end x's (the wrapped ones included):
        # then nothing is filled, even where an edge crosses the image. This also skips its int32 wrap-arounds.
        x_lo, x_hi = min(x_top.min(), x_bottom.min()), max(x_top.max(), x_bottom.max())
        if bottom.max() < 0 or top.min() >= height or x_hi < 0 or x_lo >= (width << _XY_SHIFT):
            return none
        first, last = max(int(top.min()), 0, row_lo), min(int(bottom.max()), height, row_hi)
        if first >= last:
            return none
        start = np.maximum(top, first)
        owner, offset = _ranges(np.maximum(np.minimum(bottom, last) - start, 0))
        rows = start[owner] + offset
        xs = x_top[owner] + (rows - top[owner]) * slope[owner]
        rows, xs = _sorted_crossings(rows - first, xs)
        rows += first
        # A closed polygon crosses every row an even number of times: consecutive crossings pair up.
        left = (xs[0::2] >> _XY_SHIFT).astype(np.int32)
        right = (xs[1::2] >> _XY_SHIFT).astype(np.int32)
    ok = (left < width) & (right >= 0)
    return rows[0::2][ok], np.maximum(left[ok], 0).astype(np.int64), np.minimum(right[ok], width - 1).astype(np.int64)
