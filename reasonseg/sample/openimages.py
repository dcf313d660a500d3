"""A deterministic synthetic OpenImages source in the published formats (docs/formats.md §1), gotchas included.

`write_openimages_source(root, seed=0)` writes::

    root/class-descriptions-boxable.csv                 V5 style: NO header
    root/oidv7-class-descriptions.csv                   V7 style: header LabelName,DisplayName, a quoted name
    root/validation-images-with-rotation.csv            12 columns; a quoted Title with a comma; blank Rotation
    root/validation-annotations-object-segmentation.csv 10 columns; one row with empty PredictedIoU and Clicks
    root/images/validation/<ImageID>.jpg                ImageIDs are 16 hex digits; the first starts with "0"
    root/masks/validation/<MaskPath>                    1-bit PNGs at 2x the image size (one at 1600x1201 for a
                                                        333x250 image: the off-by-one aspect of real data)
    root/masks/validation/validation-masks-f.zip        the masks of the image whose ID starts with "f", only in
                                                        its official shard
Images show simple objects (classes Circle, Rectangle, Triangle, Star, Blob, Ring, Kite); a Ring has a hole and
a Kite has a one-pixel string, which polygons cannot carry. `manifest_lines(root)` returns instruction-manifest
lines for the source (one per image; one with an ignore mask, one with an explicit polygon target).
"""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .release import COLOURS, Drawn, background, polygon_of

SPLIT = "validation"
CLASSES = {  # kind -> (MID, DisplayName); MIDs are made up, in the real /m/ form
    "circle": ("/m/0sc001", "Circle"), "rectangle": ("/m/0sc002", "Rectangle"),
    "triangle": ("/m/0sc003", "Triangle"), "star": ("/m/0sc004", "Star"), "blob": ("/m/0sc005", "Blob"),
    "ring": ("/m/0sc006", "Ring"), "kite": ("/m/0sc007", "Kite"),
}
EXTRA_CLASSES = (("/m/01g317", "Person"), ("/m/0bt9lr", "Dog"), ("/m/04yx4", "Man"))
# (height, width) of each image, and the mask size: None = twice the image.
SIZES = (((240, 320), None), ((250, 333), (1201, 1600)), ((320, 240), None), ((300, 400), None),
         ((256, 256), None), ((240, 360), None))
KIND_PLAN = (("circle", "rectangle"), ("star", "triangle", "blob"), ("ring", "circle"), ("kite", "rectangle"),
             ("blob", "star"), ("triangle", "circle", "rectangle"))
SEG_HEADER = ["MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
              "PredictedIoU", "Clicks"]
IMAGE_HEADER = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author",
                "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
LICENSE = "https://creativecommons.org/licenses/by/2.0/"


@dataclass(frozen=True)
class _Object:
    kind: str
    colour: str
    polygon: np.ndarray  # image coordinates
    mask_path: str
    box_id: str


def image_ids(seed: int = 0, n: int = len(SIZES)) -> list[str]:
    rng = np.random.default_rng([seed, 7001])
    ids = [rng.bytes(8).hex() for _ in range(n)]
    ids[0] = "0" + ids[0][1:]  # leading zero: an int() of it would lose a digit
    if n > 1:
        ids[1] = "f" + ids[1][1:]  # its masks live only in the validation-masks-f.zip shard
    return ids


def _paint_mask(obj: _Object, scale_y: float, scale_x: float, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    scaled = np.round(obj.polygon * [scale_x, scale_y] * 16).astype(np.int32)
    cv2.fillPoly(mask, [scaled], 1, cv2.LINE_8, 4)
    if obj.kind == "ring":
        centre = obj.polygon.mean(axis=0)
        radius = 0.45 * np.abs(obj.polygon - centre).max()
        cv2.circle(mask, tuple(int(round(c * 16)) for c in centre * [scale_x, scale_y]),
                   int(round(radius * 16 * scale_x)), 0, -1, cv2.LINE_8, 4)
    if obj.kind == "kite":
        # A string one image pixel wide: one mask column that nearest-neighbour resizing samples (floor(c * s)).
        column = int(np.floor(int(obj.polygon[2][0]) * scale_x))
        top, bottom = int(obj.polygon[2][1] * scale_y), int((obj.polygon[2][1] + 80) * scale_y)
        mask[top:bottom, column] = 1
    return mask.astype(bool)


def _objects(rng: np.random.Generator, image_id: str, kinds: tuple[str, ...], height: int, width: int
             ) -> list[_Object]:
    objects: list[_Object] = []
    taken: list[tuple[float, float, float]] = []
    colours = list(COLOURS)
    for kind in kinds:
        radius = float(rng.uniform(0.14, 0.2) * min(height, width)) * (0.6 if kind == "kite" else 1.0)
        for _ in range(200):
            x = float(rng.uniform(radius + 2, width - radius - 2))
            y = float(rng.uniform(radius + 2, height - radius - 85 if kind == "kite" else height - radius - 2))
            if all(np.hypot(x - tx, y - ty) > radius + tr + 4 for tx, ty, tr in taken):
                break
        taken.append((x, y, radius))
        draw_kind = {"ring": "circle", "kite": "rectangle"}.get(kind, kind)
        wobble = (0.6,) if draw_kind == "rectangle" else tuple(rng.uniform(0.65, 1.0, 9)) if kind == "blob" else ()
        angle = float(rng.uniform(0, 2 * np.pi)) if kind != "kite" else 0.3
        drawn = Drawn(draw_kind, colours[int(rng.integers(len(colours)))], (x, y), radius, angle, wobble)
        mid = CLASSES[kind][0]
        box_id = rng.bytes(4).hex()
        objects.append(_Object(kind, drawn.colour, polygon_of(drawn), f"{image_id}_{mid.replace('/', '')}_{box_id}.png",
                               box_id))
    return objects


def _render(rng: np.random.Generator, objects: list[_Object], height: int, width: int) -> np.ndarray:
    image = background(rng, height, width)
    for obj in objects:
        mask = _paint_mask(obj, 1.0, 1.0, (height, width))
        image[mask] = COLOURS[obj.colour]
    return image


def _mask_png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")  # a bool array saves as 1-bit mode "1", like real masks
    return buffer.getvalue()


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_openimages_source(root: str | os.PathLike, seed: int = 0, n_images: int = len(SIZES)) -> Path:
    """Write the synthetic source under `root` (created; must not hold a previous source) and return it."""
    root = Path(root)
    (root / "images" / SPLIT).mkdir(parents=True, exist_ok=True)
    (root / "masks" / SPLIT).mkdir(parents=True, exist_ok=True)
    seg_rows, image_rows, shard = [SEG_HEADER], [IMAGE_HEADER], {}
    for index, image_id in enumerate(image_ids(seed, n_images)):
        (height, width), mask_size = SIZES[index % len(SIZES)]
        mask_h, mask_w = mask_size or (2 * height, 2 * width)
        rng = np.random.default_rng([seed, 7002, index])
        objects = _objects(rng, image_id, KIND_PLAN[index % len(KIND_PLAN)], height, width)
        image = _render(rng, objects, height, width)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        (root / "images" / SPLIT / f"{image_id}.jpg").write_bytes(jpeg.tobytes())
        for k, obj in enumerate(objects):
            mask = _paint_mask(obj, mask_h / height, mask_w / width, (mask_h, mask_w))
            ys, xs = np.nonzero(mask)
            box = [xs.min() / mask_w, (xs.max() + 1) / mask_w, ys.min() / mask_h, (ys.max() + 1) / mask_h]
            clicks = "" if (index, k) == (0, 1) else ";".join(
                f"{x / mask_w:.5f} {y / mask_h:.5f} 1" for y, x in zip(ys[::max(1, len(ys) // 3)][:3],
                                                                      xs[::max(1, len(xs) // 3)][:3], strict=True))
            predicted = "" if (index, k) == (0, 1) else f"{rng.uniform(0.6, 0.95):.5f}"
            seg_rows.append([obj.mask_path, image_id, CLASSES[obj.kind][0], obj.box_id,
                             *(f"{v:.6f}" for v in box), predicted, clicks])
            data = _mask_png(mask)
            if image_id.startswith("f"):
                shard[obj.mask_path] = data
            else:
                (root / "masks" / SPLIT / obj.mask_path).write_bytes(data)
        title = f"Shapes, number {index}" if index % 2 else f"shapes {index}"
        rotation = "" if index == 2 else "0.0"
        image_rows.append([image_id, SPLIT, f"https://farm1.example.org/{index}/{image_id}_o.jpg",
                           f"https://www.flickr.com/photos/synthetic/{index}", LICENSE,
                           f"https://www.flickr.com/people/synthetic{index}/", f"Synthetic Author {index}", title,
                           str(len(jpeg)), "AAAAAAAAAAAAAAAAAAAAAA==", "", rotation])
    if shard:
        with zipfile.ZipFile(root / "masks" / SPLIT / f"{SPLIT}-masks-f.zip", "w") as zf:
            for name in sorted(shard):
                info = zipfile.ZipInfo(name, date_time=(2019, 5, 1, 0, 0, 0))
                zf.writestr(info, shard[name])
    (root / f"{SPLIT}-annotations-object-segmentation.csv").write_text(_csv_text(seg_rows), encoding="utf-8")
    (root / f"{SPLIT}-images-with-rotation.csv").write_text(_csv_text(image_rows), encoding="utf-8")
    classes = [[mid, name] for mid, name in CLASSES.values()] + [list(c) for c in EXTRA_CLASSES]
    (root / "class-descriptions-boxable.csv").write_text(_csv_text(classes), encoding="utf-8")
    (root / "oidv7-class-descriptions.csv").write_text(
        _csv_text([["LabelName", "DisplayName"], *classes, ["/m/018xm", "Ball (Object), round"]]), encoding="utf-8")
    return root


def read_objects(root: Path) -> dict[str, list[tuple[str, str]]]:
    """ImageID -> [(MaskPath, MID)] as listed in the segmentation CSV (file order)."""
    out: dict[str, list[tuple[str, str]]] = {}
    with open(root / f"{SPLIT}-annotations-object-segmentation.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["ImageID"], []).append((row["MaskPath"], row["LabelName"]))
    return out


def manifest_lines(root: str | os.PathLike, seed: int = 0) -> list[dict]:
    """Instruction-manifest lines for the source at `root`: one pair per image, first object as the target."""
    names = {mid: name.lower() for mid, name in CLASSES.values()}
    lines = []
    for index, (image_id, objects) in enumerate(read_objects(Path(root)).items()):
        target, mid = objects[0]
        name = names[mid]
        is_sentence = index % 2 == 1
        texts = ([f"Which object here looks most like a {name}?", f"Find the thing shaped like a {name}."]
                 if is_sentence else [f"the {name}"])
        line = {"source": "openimages", "image_id": image_id, "split": SPLIT, "targets": [target], "ignore": [],
                "texts": texts, "is_sentence": is_sentence}
        if index == 3 and len(objects) > 1:
            line["ignore"] = [objects[1][0]]
        if index == 4:
            line["targets"].append([[5.0, 5.0], [30.5, 5.0], [30.5, 22.25], [5.0, 22.25]])
            line["texts"] = [f"the {name} and the top-left corner"]
        if is_sentence:
            line["explanation"] = f"Its outline is that of a {name}."
        if index == 0:
            line["release_split"] = "train"
        lines.append(line)
    return lines


def write_manifest_jsonl(path: str | os.PathLike, lines: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path
