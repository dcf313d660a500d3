"""Masks: LISA-exact ground-truth rasterization, COCO RLE, interval form, polygons, resizing.

Three representations of a binary mask live here:
- a 2-D numpy array (uint8 or bool, H x W);
- COCO compressed RLE `{"size": [h, w], "counts": str}` (column-major runs, pycocotools' string encoding);
- intervals: sorted, disjoint `[start, end)` ranges of foreground in the column-major flattening. Scoring works on
  intervals, so it never materialises a full-size array for a prediction given as RLE.
Ground truth is drawn by `polygon_fill` (OpenCV 4.8's drawing, restated in numpy), so it is the same whatever
OpenCV is installed. OpenCV is imported lazily, by the helpers at the end only.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import numpy as np

from .errors import MaskError
from .polygon_fill import draw_polygon
from .schema import IGNORE, TARGET, Shape

# A value of pycocotools' string encoding is at most 7 chars of 5 bits: enough for any uint32 count.
_MAX_CHARS_PER_VALUE = 7
_UINT32_MAX = 2**32 - 1


_SCRATCH = threading.local()


def scratch(name: str, nbytes: int) -> np.ndarray:
    """A reusable uint8 buffer of nbytes for this thread, for temporary arrays that never leave a function.

    A fresh array of a few hundred KiB costs a page fault per 4 KiB when first written: more than the work done
    on it here. Only the last `name` buffer of a thread is valid; contents are arbitrary.
    """
    buffers = _SCRATCH.__dict__
    buf = buffers.get(name)
    if buf is None or buf.size < nbytes:
        buf = buffers[name] = np.empty(max(nbytes, 1 << 20), np.uint8)
    return buf[:nbytes]


# --------------------------------------------------------------------------------------------- rasterization

def _int_points(points: Sequence[tuple[float, float]]) -> np.ndarray:
    # The reference casts with np.array(points, dtype=np.int32): truncation toward zero, not rounding.
    # (fromiter over the flattened pairs reads a tuple of pairs about twice as fast as np.array does)
    flat = np.fromiter(itertools.chain.from_iterable(points), np.float64, 2 * len(points))
    return flat.reshape(-1, 2).astype(np.int32)


def _clip_box(pts: np.ndarray, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Bounding box of the points clipped to the image, as (x0, y0, x1, y1) with exclusive ends."""
    (x0, y0), (x1, y1) = pts.min(axis=0).tolist(), pts.max(axis=0).tolist()
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _drawn_alone(pts: np.ndarray, box: tuple[int, int, int, int] | None, height: int, width: int
                 ) -> np.ndarray | None:
    """The shape drawn alone (1 where set) on its bounding box clipped to the H x W canvas (`_clip_box`): a
    polygon draws nothing outside that box. None when the box is empty."""
    if box is None:
        return None
    x0, y0, x1, y1 = box
    layer = np.zeros((y1 - y0, x1 - x0), np.uint8)
    draw_polygon(layer, pts, 1, height, width, x0, y0)
    return layer


def _order_free(boxes: list[tuple[int, int, int, int] | None], values: list[int], most: int = 64) -> bool:
    """Whether no two shapes of different values have overlapping boxes (x0, y0, x1, y1; exclusive ends; None for
    a shape that draws nothing); False beyond `most` shapes."""
    if len(boxes) > most:
        return False
    return not any(a is not None and b is not None and values[i] != values[j]
                   and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                   for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1))


def rasterize_shapes_cropped(shapes: Sequence[Shape], height: int, width: int
                             ) -> tuple[int, int, np.ndarray]:
    """The ground-truth mask restricted to the bounding box of what is drawn: (x0, y0, crop).

    Everything outside the crop is background. Values are 0, 1 (target) and 255 (ignore).
    """
    drawable = [(s, _int_points(s.points)) for s in shapes if not s.is_flag and len(s.points) > 0]
    if not drawable:
        return 0, 0, np.zeros((0, 0), np.uint8)
    shape_boxes = [_clip_box(pts, height, width) for _, pts in drawable]
    boxes = [b for b in shape_boxes if b is not None]
    if not boxes:
        return 0, 0, np.zeros((0, 0), np.uint8)
    values = [IGNORE if shape.is_ignore else TARGET for shape, _ in drawable]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    if len(boxes) == 1 or _order_free(shape_boxes, values):
        # Shapes draw only inside their clipped boxes, and a pixel drawn by shapes of one value only ends with that
        # value whatever their order: when shapes of different values have disjoint boxes, any order gives the
        # reference's mask and the areas that decide the order need not be drawn.
        for (_, pts), value in zip(drawable, values, strict=True):
            draw_polygon(crop, pts, value, height, width, x0, y0)
        return x0, y0, crop
    # Each shape drawn alone gives its area; the mask is those drawings laid down in the reference's order
    # (argsort ascending then reversed; ties follow numpy's sort), each over the ones before it.
    layers = [_drawn_alone(pts, box, height, width) for (_, pts), box in zip(drawable, shape_boxes, strict=True)]
    areas = [0 if layer is None else int(np.count_nonzero(layer)) for layer in layers]
    for i in np.argsort(areas)[::-1]:
        if layers[i] is not None:
            bx0, by0, bx1, by1 = shape_boxes[i]
            region = crop[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
            np.copyto(region, values[i], where=layers[i].view(bool))
    return x0, y0, crop


def rasterize_shapes(shapes: Sequence[Shape], height: int, width: int) -> np.ndarray:
    """The LISA ground-truth mask (H x W uint8: 0 background, 1 target, 255 ignore), docs/protocol.md §2."""
    full = np.zeros((height, width), np.uint8)
    x0, y0, crop = rasterize_shapes_cropped(shapes, height, width)
    full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return full


# ------------------------------------------------------------------------------------------------------ RLE

def _check_size(size, where: str = "size") -> tuple[int, int]:
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise MaskError(f"RLE size must be [height, width] of non-negative integers, got {size!r}", field=where)
    return int(size[0]), int(size[1])


def as_array(values) -> np.ndarray:
    """A numpy array from a numpy array, a list, or a tensor on any device (duck-typed: torch is never imported)."""
    if hasattr(values, "detach"):             # a torch tensor: leave the graph, the device, and bfloat16 behind
        values = values.detach().cpu()
        if str(getattr(values, "dtype", "")) == "torch.bfloat16":
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def binary_mask(mask, threshold: float | None = None) -> np.ndarray:
    """A 2-D bool mask from a numpy array or a tensor of any framework and device (duck-typed, torch never imported).

    Integer and bool masks: any non-zero pixel is foreground. Float masks (probabilities, logits) need a
    `threshold` (foreground is `mask > threshold`; LISA thresholds logits at 0), unless every value is exactly 0
    or 1: treating "any non-zero" as foreground would turn a probability map into a full mask. A leading axis
    of length 1 (1 x H x W) is dropped.
    """
    array = as_array(mask)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise MaskError(f"expected a 2-D mask (H x W), got shape {array.shape}")
    if threshold is not None:
        return array > threshold
    if array.dtype.kind == "f":
        if not ((array == 0) | (array == 1)).all():
            raise MaskError(f"the mask is a {array.dtype} array with values other than 0 and 1 (probabilities or "
                            "logits?); pass threshold=, e.g. threshold=0.5 for probabilities or threshold=0.0 for "
                            "logits as LISA does")
    elif array.dtype.kind not in "biu":
        raise MaskError(f"a mask must be bool, integer or float, got dtype {array.dtype}")
    return array != 0


def encode_rle(mask, threshold: float | None = None) -> dict:
    """COCO compressed RLE of a 2-D mask, counts as a str. See `binary_mask` for what counts as foreground."""
    from pycocotools import mask as cocomask

    rle = cocomask.encode(np.asfortranarray(binary_mask(mask, threshold), dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_counts(rle: dict) -> np.ndarray:
    """The uncompressed run lengths of a COCO RLE, validated (int64; zeros first, alternating).

    Accepts compressed (str/bytes) and uncompressed (list of ints) counts. Rejects anything pycocotools would
    misread: characters outside its alphabet, a value cut short, negative or oversized runs, and runs that do not
    add up to height x width (pycocotools itself would write past its buffer).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskError("a mask must be an object with 'size' and 'counts'", field="mask")
    h, w = _check_size(rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise MaskError("uncompressed RLE counts must be integers", field="counts")
        if any(v < 0 or v > _UINT32_MAX for v in counts):   # before int64 conversion, which overflows at 2^63
            raise MaskError("RLE has a negative or oversized run", field="counts")
        runs = np.array(counts, dtype=np.int64)
    elif isinstance(counts, (str, bytes)):
        try:
            raw = counts.encode("ascii") if isinstance(counts, str) else counts
        except UnicodeEncodeError:
            raise MaskError("RLE counts string has characters outside pycocotools' alphabet",
                            field="counts") from None
        runs = _decode_count_string(raw)
    else:
        raise MaskError(f"RLE counts must be a string or a list, got {type(counts).__name__}", field="counts")
    if runs.size and (runs.min() < 0 or runs.max() > _UINT32_MAX):
        raise MaskError("RLE has a negative or oversized run", field="counts")
    total = int(runs.sum())
    if total != h * w:
        raise MaskError(f"RLE runs cover {total} pixels but size {h}x{w} has {h * w}", field="counts",
                        hint="encode the mask at the image's exact size")
    return runs


def _decode_count_string(raw: bytes) -> np.ndarray:
    """Vectorised inverse of pycocotools' rleToString (LEB128-like, 5 bits a char, deltas from run i-2).

    Values are assembled one char position at a time (at most 7 passes over the values, usually 2 or 3),
    never one char at a time, so a speckled mask's tens of thousands of runs decode in a few array passes.
    """
    if not raw:
        return np.zeros(0, np.int64)
    c = np.frombuffer(raw, np.uint8)
    if c.min() < 48 or c.max() > 48 + 63:
        raise MaskError("RLE counts string has characters outside pycocotools' alphabet", field="counts")
    c = c - np.uint8(48)
    last = c < 0x20                                   # the char that ends a value has no continuation bit
    if not last[-1]:
        raise MaskError("RLE counts string ends in the middle of a value", field="counts")
    ends = np.flatnonzero(last)
    lengths = np.empty_like(ends)
    lengths[0] = ends[0] + 1
    np.subtract(ends[1:], ends[:-1], out=lengths[1:])
    longest = int(lengths.max())
    if longest > _MAX_CHARS_PER_VALUE:
        raise MaskError("RLE counts string has a value too long to be a run length", field="counts")
    final = c[ends]
    if longest == 1:
        x = (final & 0x1F).astype(np.int64)
    else:
        starts = ends - (lengths - 1)
        x = (c[starts] & 0x1F).astype(np.int64)
        has = np.flatnonzero(lengths > 1)
        for k in range(1, longest):
            if k > 1:                                 # the values this long: fewer at each position
                has = has[lengths[has] > k]
            x[has] |= (c[starts[has] + k] & 0x1F).astype(np.int64) << (5 * k)
    # The final char's 0x10 bit is the sign: the value is negative, offset by 2 ** (5 * its length).
    x -= ((final >> 4) & 1).astype(np.int64) << (5 * lengths)
    x[3::2] = np.cumsum(x[1::2])[1:]
    x[2::2] = np.cumsum(x[2::2])
    return x


def decode_rle(rle: dict) -> np.ndarray:
    """A 2-D uint8 mask (0/1) from a COCO RLE, after validating it."""
    runs = rle_counts(rle)
    h, w = int(rle["size"][0]), int(rle["size"][1])
    values = np.zeros(runs.size, np.uint8)
    values[1::2] = 1
    return np.repeat(values, runs).reshape(w, h).T.copy()


# ------------------------------------------------------------------------------------------------ intervals

Intervals = tuple[np.ndarray, np.ndarray]
EMPTY_INTERVALS: Intervals = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def runs_to_intervals(runs: np.ndarray) -> Intervals:
    """Foreground [start, end) ranges (column-major flat index) from alternating run lengths."""
    bounds = np.cumsum(runs)
    n_fg = runs.size // 2
    starts, ends = bounds[0:2 * n_fg:2], bounds[1:2 * n_fg + 1:2]
    keep = ends > starts
    return starts[keep], ends[keep]


def rle_to_intervals(rle: dict) -> Intervals:
    return runs_to_intervals(rle_counts(rle))


def mask_to_intervals(mask: np.ndarray) -> Intervals:
    """Foreground ranges of a 2-D mask in column-major order (the order of COCO RLE)."""
    flat = np.ascontiguousarray(mask.T).reshape(-1) != 0
    if flat.size == 0:
        return EMPTY_INTERVALS
    bounds = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    rising = flat[bounds]
    starts, ends = bounds[rising], bounds[~rising]
    if flat[0]:
        starts = np.concatenate(([0], starts))
    if flat[-1]:
        ends = np.concatenate((ends, [flat.size]))
    return starts.astype(np.int64), ends.astype(np.int64)


def crop_label_intervals(crop: np.ndarray, x0: int, y0: int, height: int, labels: Sequence[int]
                         ) -> list[Intervals]:
    """Foreground ranges of each label value of a crop placed at (x0, y0) in an image of the given height.

    All labels come from one pass: the boundaries are where a pixel differs from the one above it (or is
    foreground on the crop's top or bottom row), found in the crop's own row-major memory order; no transposed
    copy of the crop is made, and only the boundaries, far fewer than the pixels, are put into column-major order.
    """
    if crop.size == 0:
        return [EMPTY_INTERVALS for _ in labels]
    crop = crop.view(np.uint8) if crop.dtype == bool else crop
    ch, cw = crop.shape
    # Inside the crop: non-zero where a pixel differs from the one above, in a buffer padded to whole 8-byte
    # words so that the (few) boundaries are found a word at a time.
    inner = (ch - 1) * cw
    changed = scratch("edges", -(-inner // 8) * 8)
    changed[inner:] = 0
    np.not_equal(crop[1:], crop[:-1], out=changed[:inner].view(bool).reshape(ch - 1, cw))
    # (nonzero() of a bool array counts and copies far faster than of the uint64 words themselves)
    words = np.flatnonzero(changed.view(np.uint64) != 0)
    byte = np.flatnonzero(changed.view(np.uint64)[words].view(np.uint8))
    upper = words[byte >> 3] * 8 + (byte & 7)         # flat index of the pixel above each inner boundary
    pixels = crop.reshape(-1)
    top, bottom = np.flatnonzero(crop[0]), np.flatnonzero(crop[ch - 1])
    # The values above and below each boundary; the crop is background outside.
    above = np.concatenate((np.zeros(top.size, crop.dtype), pixels[upper], crop[ch - 1, bottom]))
    below = np.concatenate((crop[0, top], pixels[upper + cw], np.zeros(bottom.size, crop.dtype)))
    rows, cols = np.divmod(upper, cw)
    rows = np.concatenate((np.zeros(top.size, np.int64), rows + 1, np.full(bottom.size, ch, np.int64)))
    cols = np.concatenate((top, cols, bottom))
    position = (x0 + cols) * height + (y0 + rows)
    return [(np.sort(position[below == label]), np.sort(position[above == label])) for label in labels]


def intervals_to_mask(iv: Intervals, height: int, width: int) -> np.ndarray:
    """The 2-D uint8 mask (0/1) of an interval set."""
    flat = np.zeros(height * width + 1, np.int8)
    np.add.at(flat, iv[0], 1)
    np.add.at(flat, iv[1], -1)
    return np.cumsum(flat[:-1], dtype=np.int8).astype(np.uint8).reshape(width, height).T.copy()


def intervals_area(iv: Intervals) -> int:
    return int((iv[1] - iv[0]).sum())


class Coverage:
    """|A ∩ B| for any number of interval sets A against one set B, whose prefix sums are computed once.

    Each A costs O(|A| log |B|): its boundaries are searched in B, which is never materialised.
    """

    def __init__(self, b: Intervals):
        self.starts, ends = b
        self.prefix = np.concatenate(([0], np.cumsum(ends - self.starts)))
        self.total = int(self.prefix[-1])
        self.ends_before = np.concatenate(([-1], ends))     # ends_before[k]: end of the k-th interval, 1-based

    def __call__(self, a: Intervals) -> int:
        n = a[0].size
        if n == 0 or self.starts.size == 0:
            return 0
        # |B ∩ [0, x)| for every boundary x of A: the complete intervals of B starting before x, less the part
        # of the last one that reaches beyond x.
        x = np.concatenate(a)
        k = np.searchsorted(self.starts, x, side="left")
        before = self.prefix[k] - np.maximum(self.ends_before[k] - x, 0)
        return int(before[n:].sum() - before[:n].sum())


def intervals_intersection_area(a: Intervals, b: Intervals) -> int:
    """|A ∩ B| for two sorted, disjoint interval sets: the smaller set's boundaries searched in the larger."""
    return Coverage(b)(a) if a[0].size <= b[0].size else Coverage(a)(b)


# ------------------------------------------------------------------------------------ polygons and resizing

def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[list[float]]]:
    """Outer contours of a binary mask as `[[x, y], ...]` polygons (holes cannot be expressed in ReasonSeg).

    Contours are pixel-centre chains; drawn back with `rasterize_shapes` they reproduce hole-free masks.
    """
    import cv2

    contours, _ = cv2.findContours((mask != 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for contour in contours:
        pts = contour.reshape(-1, 2)
        if len(pts) >= min_points:
            polygons.append([[float(x), float(y)] for x, y in pts])
    return polygons


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize to exactly (height, width), keeping the label values."""
    import cv2

    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
