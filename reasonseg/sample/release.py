"""A deterministic synthetic ReasonSeg release in the public on-disk layout (docs/protocol.md §1).

`write_sample_release(out, seed=0)` writes::

    out/train/<id>.jpg + <id>.json    24 images (default)
    out/val/<id>.jpg + <id>.json      24 images
    out/test/<id>.jpg + <id>.json     36 images
    out/explanatory/train.json        [{"image": "<id>.jpg", "query": str, "outputs": str}, ...]

Each image shows 2-5 simple objects (circle, rectangle, triangle, star, blob) in named colours on a textured
background (gradient, noise, stripes, checkerboard). Exactly one object is the target (two objects in the
`two_polygons` case). Distractors differ from the target in both kind and colour, so every query is
unambiguous. Ids are 16 hex characters, like OpenImages image ids, unique across splits.

Per-image JSON: `text` (1-4 queries; 1-5 in train; `text[0]` is the one the lisa protocol scores),
`is_sentence` (short noun phrase or long implicit sentence; alternating, so half of each split is long),
`shapes` (LabelMe-like polygons, float points jittered around the drawn outline; circles are 24-gons),
plus `imagePath`, `imageHeight`, `imageWidth`. Target shapes come first in `shapes`, so a reader that paints
in file order instead of by area (docs/protocol.md §2) gets the ignore cases wrong. The explanatory file has one
entry per long-query train image (half of train), with `query` = its `text[0]`.

Special cases, at fixed positions of each split (`SPECIAL_PLAN`); their ids come from `special_cases(seed,
counts)`, or `SPECIAL` for seed 0 and the default counts, as {case: [(split, id), ...]}:

- `ignore_partial` (3 per split): an "ignore" square centred on a vertex of the target, partly covering it.
- `flag` (2 per split): a "flag" shape tracing a distractor; a reader that does not skip it grows the target.
- `two_polygons` (1 per split): two same-kind, same-colour objects, each a "target" shape; queries are plural.
- `target_in_ignore` (1 per split): the target lies wholly inside a larger "ignore" 16-gon.
- `out_of_bounds` (1 per split): the target sits on an image border; its polygon has points outside the image.
- `cp1252` (the first val image): the JSON is encoded in cp1252, not UTF-8, and `text[0]` contains "naïve".
- `empty_shapes` (the first test image): `shapes` is empty (as in two released test files, LISA issue #157).

With small `counts` the later positions of a plan are not written. Output is byte-for-byte identical for a
given seed; each image draws from its own generator, seeded by (seed, split, index), so an image does not
depend on `counts`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from ..outputs import staged_output_dir

SPLITS = ("train", "val", "test")
DEFAULT_COUNTS = {"train": 24, "val": 24, "test": 36}
SIZES = ((240, 320), (320, 240), (300, 400), (256, 256), (360, 480))  # (height, width)
MIN_SIDE = 64

# BGR, saturated so that the objects stand out from the muted backgrounds.
COLOURS = {
    "red": (30, 30, 220),
    "green": (50, 170, 40),
    "blue": (220, 70, 30),
    "yellow": (30, 220, 240),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "orange": (20, 140, 245),
    "purple": (170, 40, 140),
}
KINDS = ("circle", "rectangle", "triangle", "star", "blob")
BACKGROUNDS = ("gradient", "noise", "stripes", "checkerboard")

_COMMON_CASES = (
    ("ignore_partial",) * 3 + ("flag",) * 2 + ("two_polygons", "target_in_ignore", "out_of_bounds")
)
SPECIAL_PLAN: dict[str, tuple[str, ...]] = {
    "train": _COMMON_CASES,
    "val": ("cp1252",) + _COMMON_CASES,
    "test": ("empty_shapes",) + _COMMON_CASES,
}

# Implicit descriptions for the long queries: by function or look (kind) and by a familiar thing (colour).
KIND_CLUES = {
    "circle": ("something you could roll across the table", "the shape that has no corners at all",
               "the object shaped like a coin seen from above"),
    "rectangle": ("the shape that looks like a closed book lying flat", "the object shaped like a door",
                  "something with four square corners, like a sheet of paper"),
    "triangle": ("the shape that looks like a slice of pizza", "the object shaped like a warning road sign",
                 "something with exactly three corners"),
    "star": ("the shape you might put on top of a Christmas tree",
             "the object that looks like a sheriff's badge", "something with five sharp points"),
    "blob": ("the shape that looks like a splash of spilled paint",
             "the object with a lumpy outline, like a puddle", "something that has no regular shape at all"),
}
KIND_REASONS = {
    "circle": "is round with no corners, so it would roll",
    "rectangle": "has four straight sides meeting at right angles, like a book or a door",
    "triangle": "has three straight sides narrowing to a point, like a wedge of pizza",
    "star": "has five sharp points around its centre",
    "blob": "has an irregular, lumpy outline, like spilled paint",
}
COLOUR_THINGS = {
    "red": "a ripe tomato", "green": "fresh grass", "blue": "a clear summer sky", "yellow": "a ripe banana",
    "white": "fresh snow", "black": "coal", "orange": "a carrot", "purple": "a plum",
}
PLURALS = {kind: kind + "s" for kind in KINDS}


@dataclass(frozen=True)
class Drawn:
    """One object as drawn: `wobble` holds the rectangle's aspect ratio or the blob's per-vertex radii."""

    kind: str
    colour: str
    centre: tuple[float, float]
    radius: float
    angle: float
    wobble: tuple[float, ...] = ()


# --------------------------------------------------------------------------------------------- drawing

def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted BGR background: a linear gradient, uniform noise, stripes or a checkerboard."""
    style = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    base = rng.uniform(80, 170) + rng.uniform(-20, 20, size=3)
    other = base + rng.uniform(-35, 35, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if style == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        image = base + t[..., None] * (other - base)
    elif style == "noise":
        image = base + rng.uniform(-25, 25, size=(height, width, 3))
    elif style == "stripes":
        half_period = int(rng.integers(4, 17))
        angle = np.deg2rad(45 * int(rng.integers(4)))
        t = xx * np.cos(angle) + yy * np.sin(angle)
        image = np.where((np.floor(t / half_period) % 2 == 1)[..., None], other, base)
    else:
        cell = int(rng.integers(12, 41))
        image = np.where(((xx // cell + yy // cell) % 2 == 1)[..., None], other, base)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def polygon_of(obj: Drawn) -> np.ndarray:
    """The exact outline of an object as an (N, 2) float array of (x, y) vertices."""
    if obj.kind == "rectangle":
        half_w, half_h = 0.95, 0.95 * obj.wobble[0]
        local = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    else:
        if obj.kind == "circle":
            radii = np.ones(24)
        elif obj.kind == "triangle":
            radii = np.ones(3)
        elif obj.kind == "star":
            radii = np.tile([1.0, 0.45], 5)
        elif obj.kind == "blob":
            radii = np.array(obj.wobble)
        else:
            raise ValueError(f"unknown kind {obj.kind!r}")
        # Evenly spaced angles keep every polygon simple (no self-intersection), whatever the radii.
        theta = np.arange(len(radii)) * (2 * np.pi / len(radii)) - np.pi / 2
        local = np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    rotated = local @ np.array([[cos, sin], [-sin, cos]])
    return rotated * obj.radius + np.array(obj.centre)


def draw_object(image: np.ndarray, obj: Drawn) -> None:
    """Paint the object into the BGR image in place, anti-aliased, at sub-pixel precision."""
    colour = tuple(int(c) for c in COLOURS[obj.colour])
    shift = 4  # OpenCV fixed point: coordinates in 1/16 pixel
    if obj.kind == "circle":
        centre = tuple(int(round(c * 16)) for c in obj.centre)
        cv2.circle(image, centre, int(round(obj.radius * 16)), colour, -1, cv2.LINE_AA, shift)
    else:
        points = np.round(polygon_of(obj) * 16).astype(np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA, shift)


def _random_object(rng: np.random.Generator, kind: str, colour: str, centre: tuple[float, float],
                   radius: float) -> Drawn:
    if kind == "rectangle":
        wobble: tuple[float, ...] = (float(rng.uniform(0.5, 0.8)),)
    elif kind == "blob":
        wobble = tuple(float(r) for r in rng.uniform(0.65, 1.0, size=9))
    else:
        wobble = ()
    return Drawn(kind, colour, centre, radius, float(rng.uniform(0, 2 * np.pi)), wobble)


def _annotation(rng: np.random.Generator, polygon: np.ndarray) -> list[list[float]]:
    # Annotators click near, not on, the outline: sub-pixel jitter makes the int32 truncation matter.
    jittered = polygon + rng.normal(0.0, 0.35, size=polygon.shape)
    return [[round(float(x), 2), round(float(y), 2)] for x, y in jittered]


def _shape(label: str, points: list[list[float]]) -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": "polygon", "flags": {}}


def _square(centre: np.ndarray, half: float, angle: float) -> np.ndarray:
    local = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * half
    cos, sin = np.cos(angle), np.sin(angle)
    return local @ np.array([[cos, sin], [-sin, cos]]) + centre


def _regular(centre: tuple[float, float], radius: float, sides: int) -> np.ndarray:
    theta = np.arange(sides) * (2 * np.pi / sides)
    return np.stack([centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)], axis=1)


def _free_spot(rng: np.random.Generator, height: int, width: int, reach: float,
               taken: list[tuple[float, float, float]], gap: float) -> tuple[float, float] | None:
    """A centre keeping a disc of radius `reach` inside the image and `gap` away from the taken discs."""
    if 2 * reach >= min(height, width):
        return None
    for _ in range(200):
        x, y = float(rng.uniform(reach, width - reach)), float(rng.uniform(reach, height - reach))
        if all(np.hypot(x - tx, y - ty) >= reach + tr + gap for tx, ty, tr in taken):
            return x, y
    return None


def _edge_spot(rng: np.random.Generator, height: int, width: int, radius: float) -> tuple[float, float]:
    # Centre 0.3 r inside a border: every kind reaches at least 0.45 r from its centre in any direction,
    # so it always crosses the border.
    inset = 0.3 * radius
    along_x, along_y = float(rng.uniform(radius, width - radius)), float(rng.uniform(radius, height - radius))
    edge = int(rng.integers(4))
    return [(inset, along_y), (width - inset, along_y), (along_x, inset), (along_x, height - inset)][edge]


def _target_colour(rng: np.random.Generator, background_mean: np.ndarray) -> str:
    # Only colours far from the background, so that the target is always plainly visible.
    distance = {name: float(np.abs(np.array(bgr) - background_mean).sum()) for name, bgr in COLOURS.items()}
    far = [name for name in COLOURS if distance[name] >= 200]
    if not far:
        return max(COLOURS, key=lambda name: distance[name])
    return far[int(rng.integers(len(far)))]


# --------------------------------------------------------------------------------------------- texts

def make_texts(rng: np.random.Generator, kind: str, colour: str, *, is_sentence: bool, n: int,
               plural: bool = False) -> list[str]:
    """Up to `n` distinct queries for the target: noun phrases, or sentences that describe it implicitly."""
    thing = COLOUR_THINGS[colour]
    if plural:
        kinds = PLURALS[kind]
        if is_sentence:
            pool = [f"Find every object with the colour of {thing}.",
                    f"Which objects in this picture have the colour of {thing}?",
                    f"Point out all the {kinds} that have the colour of {thing}.",
                    f"Where are the things that share the colour of {thing}?"]
        else:
            pool = [f"the {colour} {kinds}", f"{colour} {kinds}", f"both {colour} {kinds}",
                    f"the two {colour} {kinds}"]
    elif is_sentence:
        pool = [f"Find the object with the colour of {thing}.",
                f"What in this image has the colour of {thing}?"]
        for clue in KIND_CLUES[kind]:
            pool += [f"Can you find {clue}?", f"Please find {clue}.",
                     f"Look for {clue}; it has the colour of {thing}."]
    else:
        pool = [f"the {colour} {kind}", f"{colour} {kind}", f"the {kind}", f"{kind} in {colour}",
                f"the {colour} {kind} shape"]
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[int(i)] for i in picks]


def _explanation(kind: str, colour: str, plural: bool) -> str:
    thing = COLOUR_THINGS[colour]
    if plural:
        return f"Each {colour} {kind} {KIND_REASONS[kind]}, and both have the colour of {thing}."
    return f"The {colour} {kind} {KIND_REASONS[kind]}, and it has the colour of {thing}."


# --------------------------------------------------------------------------------------------- one image

@dataclass(frozen=True)
class _Sample:
    image: np.ndarray
    doc: dict
    kind: str
    colour: str
    plural: bool


def _make_sample(rng: np.random.Generator, split: str, index: int, case: str | None,
                 size: tuple[int, int] | None, name: str) -> _Sample:
    height, width = size if size is not None else SIZES[int(rng.integers(len(SIZES)))]
    image = background(rng, height, width)
    colour = _target_colour(rng, image.reshape(-1, 3).mean(axis=0))
    kind = KINDS[int(rng.integers(len(KINDS)))]
    scale = min(height, width)
    gap = 0.04 * scale
    taken: list[tuple[float, float, float]] = []

    targets = []
    for _ in range(2 if case == "two_polygons" else 1):
        radius = float(rng.uniform(0.07, 0.14)) * scale
        reach = 1.6 * radius if case == "target_in_ignore" else radius
        if case == "out_of_bounds":
            centre = _edge_spot(rng, height, width, radius)
        else:
            centre = _free_spot(rng, height, width, reach, taken, gap)
            if centre is None:
                raise ValueError(f"image size {(height, width)} is too small to place the target")
        taken.append((centre[0], centre[1], reach))
        targets.append(_random_object(rng, kind, colour, centre, radius))

    distractors = []
    n_distractors = max(int(rng.integers(2, 6)) - len(targets), 1)
    for _ in range(n_distractors):
        radius = float(rng.uniform(0.07, 0.14)) * scale
        centre = _free_spot(rng, height, width, radius, taken, gap)
        if centre is None:
            continue
        taken.append((centre[0], centre[1], radius))
        other_kind = [k for k in KINDS if k != kind][int(rng.integers(len(KINDS) - 1))]
        other_colour = [c for c in COLOURS if c != colour][int(rng.integers(len(COLOURS) - 1))]
        distractors.append(_random_object(rng, other_kind, other_colour, centre, radius))
    if case == "flag" and not distractors:
        raise ValueError(f"image size {(height, width)} is too small to place a distractor")

    for obj in distractors + targets:
        draw_object(image, obj)

    shapes = [_shape("target", _annotation(rng, polygon_of(t))) for t in targets]
    first = targets[0]
    if case == "ignore_partial":
        outline = polygon_of(first)
        vertex = outline[int(rng.integers(len(outline)))]
        square = _square(vertex, 0.4 * first.radius, float(rng.uniform(0, np.pi / 2)))
        shapes.append(_shape("ignore", _annotation(rng, square)))
    elif case == "target_in_ignore":
        shapes.append(_shape("ignore", _annotation(rng, _regular(first.centre, 1.5 * first.radius, 16))))
    elif case == "flag":
        shapes.append(_shape("flag", _annotation(rng, polygon_of(distractors[0]))))
    elif case == "empty_shapes":
        shapes = []

    is_sentence = index % 2 == 0 or case == "cp1252"
    n_texts = int(rng.integers(1, 6 if split == "train" else 5))
    plural = len(targets) > 1
    texts = make_texts(rng, kind, colour, is_sentence=is_sentence, n=n_texts, plural=plural)
    if case == "cp1252":
        clue = KIND_CLUES[kind][int(rng.integers(len(KIND_CLUES[kind])))]
        texts[0] = f"A naïve question: can you find {clue}?"

    doc = {"text": texts, "is_sentence": is_sentence, "shapes": shapes,
           "imagePath": f"{name}.jpg", "imageHeight": height, "imageWidth": width}
    return _Sample(image, doc, kind, colour, plural)


# --------------------------------------------------------------------------------------------- release

def _resolve_counts(counts: dict[str, int] | None) -> dict[str, int]:
    if counts is None:
        return dict(DEFAULT_COUNTS)
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    for split, n in counts.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"count for split {split!r} must be a non-negative int, got {n!r}")
    return {split: counts[split] for split in SPLITS if split in counts}


def sample_ids(seed: int = 0, counts: dict[str, int] | None = None) -> dict[str, list[str]]:
    """The image ids, per split in generation order, that `write_sample_release` uses for this seed."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    used: set[str] = set()
    ids: dict[str, list[str]] = {}
    for split, n in _resolve_counts(counts).items():
        split_no = SPLITS.index(split)
        ids[split] = []
        for index in range(n):
            rng = np.random.default_rng([seed, split_no, index, 0])
            name = rng.bytes(8).hex()
            while name in used:
                name = rng.bytes(8).hex()
            used.add(name)
            ids[split].append(name)
    return ids


def special_cases(seed: int = 0, counts: dict[str, int] | None = None) -> dict[str, list[tuple[str, str]]]:
    """Case name -> [(split, id), ...] for the special cases in a release with this seed and counts."""
    found: dict[str, list[tuple[str, str]]] = {}
    for split, names in sample_ids(seed, counts).items():
        for case, name in zip(SPECIAL_PLAN[split], names, strict=False):
            found.setdefault(case, []).append((split, name))
    return found


SPECIAL = special_cases()  # for seed 0 and DEFAULT_COUNTS


def _write_tree(root: Path, seed: int, ids: dict[str, list[str]], size: tuple[int, int] | None) -> None:
    explanatory = []
    for split, names in ids.items():
        split_no = SPLITS.index(split)
        plan = SPECIAL_PLAN[split]
        folder = root / split
        folder.mkdir()
        for index, name in enumerate(names):
            case = plan[index] if index < len(plan) else None
            rng = np.random.default_rng([seed, split_no, index, 1])
            sample = _make_sample(rng, split, index, case, size, name)
            ok, jpeg = cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise OSError(f"OpenCV could not encode {split}/{name}.jpg")
            (folder / f"{name}.jpg").write_bytes(jpeg.tobytes())
            encoding = "cp1252" if case == "cp1252" else "utf-8"
            (folder / f"{name}.json").write_bytes(json.dumps(sample.doc, ensure_ascii=False).encode(encoding))
            if split == "train" and sample.doc["is_sentence"]:
                explanatory.append({"image": f"{name}.jpg", "query": sample.doc["text"][0],
                                    "outputs": _explanation(sample.kind, sample.colour, sample.plural)})
    if "train" in ids:
        (root / "explanatory").mkdir()
        text = json.dumps(explanatory, ensure_ascii=False, indent=2) + "\n"
        (root / "explanatory" / "train.json").write_bytes(text.encode("utf-8"))


def write_sample_release(out: str | os.PathLike, *, seed: int = 0, counts: dict[str, int] | None = None,
                         size: tuple[int, int] | None = None) -> Path:
    """Write a synthetic ReasonSeg release to the new folder `out` and return its path.

    `counts` maps split -> number of images (default `DEFAULT_COUNTS`; splits left out are not written, and
    the explanatory file is written only with train). `size=(height, width)` gives every image that size; by
    default each image takes one of `SIZES`. Raises `DatasetError` if `out` exists and is not an empty folder.
    """
    if size is not None:
        if len(size) != 2 or any(not isinstance(s, int) or s < MIN_SIDE for s in size):
            raise ValueError(f"size must be (height, width) ints of at least {MIN_SIDE}, got {size!r}")
        size = (int(size[0]), int(size[1]))
    ids = sample_ids(seed, counts)

    # Built in a temporary folder and moved into place at the end: a crash never leaves a half-written release.
    with staged_output_dir(out, overwrite=False, outputs=(), error=DatasetError) as tmp:
        _write_tree(tmp, seed, ids, size)
    return Path(out)
