"""Deterministic synthetic sources for the template QA builder, each in its dataset's exact on-disk format
(docs/formats.md §3-7), laid out as the reference's `dataset/` tree (docs/formats.md §9)::

    ade20k/images/training/ADE_train_%08d.jpg, ade20k/annotations/training/*.png (8-bit L),
        ade20k/objectInfo150.txt (TSV, 150 rows, comma-joined synonyms), ade20k/sceneCategories.txt
    cocostuff/train2017/%012d.png (values = labels.txt id - 1, 255 unlabeled), cocostuff/labels.txt
    coco/train2017/%012d.jpg                     (the COCO images of COCO-Stuff, LLaVA and PACO)
    refer_seg/{refcoco,refcoco+,refcocog,refclef}/instances.json + refs(unc|umd).p (pickle protocol 2)
    refer_seg/images/mscoco/images/train2014/COCO_train2014_%012d.jpg, refer_seg/images/saiapr_tc-12/00/images/*.jpg
    llava_dataset/llava_instruct_150k.json
    vlpart/paco/annotations/paco_lvis_v1_train.json, vlpart/pascal_part/train.json + VOCdevkit/VOC2010/JPEGImages/
    mapillary/config_v2.0.json, mapillary/training/v2.0/labels/*.png (indexed 'P'), mapillary/training/images/*.jpg
    reason_seg/ReasonSeg/                         (train split of `write_sample_release`, with explanatory/)

The gotchas of the real data are in: ADE value 0 (ignored), 150 (the last class) and an all-zero label map;
COCO-Stuff's off-by-one values (0 is person), a `-` class (ignored), `sky-other` and an all-255 map; string
LLaVA ids, `<image>` at the end of a turn, a 4-turn item and non-ASCII text; a PACO image without `file_name`
(only `coco_url`, as LVIS v1), a part with empty segmentation; refclef segmentations as lists of RLEs with str
counts; a refCOCO annotation of two overlapping polygons; refs in several splits, `raw` differing from `sent`;
Mapillary's indexed label PNGs, mixed-case `readable` names (two labels sharing one), its own `Unlabeled` label
and an all-255 map.
Write them under a root whose path holds `images`, `cocostuff` and `.jpg` (`GOTCHA_ROOT`) to prove that no reader
derives paths by string replacement. Output is byte-for-byte identical for a given seed.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import cv2
import numpy as np

from ..masks import encode_rle
from .release import write_sample_release

GOTCHA_ROOT = "images_cocostuff.jpg"
COCO_IDS = (9, 25, 30, 34, 36, 42)

# ADE20K: a few classes with names (value -> objectInfo150 Name), the rest are placeholders.
ADE_NAMES = {1: "wall", 4: "floor, flooring", 13: "person, individual, someone, somebody, mortal, soul",
             20: "chair", 23: "painting, picture", 37: "lamp", 150: "flag"}
ADE_DRAWN = (1, 4, 13, 20, 23, 37, 150)
# COCO-Stuff pixel values drawn: person, car, dog, building-other (ignored), sky-other (kept as sky), tree, wood.
COCOSTUFF_DRAWN = (0, 2, 17, 95, 156, 168, 181)
COLOURS = ((40, 40, 200), (40, 180, 40), (200, 80, 30), (30, 200, 220), (180, 40, 160), (20, 140, 240),
           (230, 230, 230), (90, 60, 30))


def _rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _polygon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random convex-ish polygon (int32 N x 2, x y) well inside the image."""
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    r = rng.uniform(0.15, 0.3) * min(h, w)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
    radii = r * rng.uniform(0.7, 1.0, angles.size)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return np.clip(pts, 0, [w - 1, h - 1]).astype(np.int32)


def _fill(canvas: np.ndarray, pts: np.ndarray, value) -> None:
    cv2.fillPoly(canvas, [pts], value)


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(60, 200, 3)
    ramp = np.linspace(0, 40, w, dtype=np.float32)[None, :, None]
    return np.clip(base[None, None, :] + ramp + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _write_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    path.write_bytes(buf.tobytes())


def _write_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", label)
    path.write_bytes(buf.tobytes())


def _size(rng: np.random.Generator, size: tuple[int, int] | None) -> tuple[int, int]:
    if size:
        return size
    return int(rng.integers(40, 72)), int(rng.integers(48, 96))


def _scene(rng: np.random.Generator, h: int, w: int, values: list[int], label: np.ndarray,
           image: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Paint one polygon per value into the label map and the image; returns (value, polygon) in paint order."""
    drawn = []
    for v in values:
        pts = _polygon(rng, h, w)
        _fill(label, pts, int(v))
        _fill(image, pts, tuple(int(c) for c in COLOURS[int(v) % len(COLOURS)]))
        drawn.append((v, pts))
    return drawn


# ------------------------------------------------------------------------------------------------------ ADE20K

def write_ade20k(root: Path, seed: int = 0, count: int = 6, size: tuple[int, int] | None = None,
                 objects: int | None = None) -> Path:
    """ADEChallengeData2016 layout. Image 1 holds {0, 1, 13, 150}; image 2 is all 0 (nothing to ask); the others
    1-3 objects of the named classes, or `objects` objects of any of the 150 classes (for benchmarks)."""
    lines = ["Idx\tRatio\tTrain\tVal\tName"]
    for idx in range(1, 151):
        lines.append(f"{idx}\t{0.1 / idx:.4f}\t{1000 - idx}\t{100 - idx // 2}\t{ADE_NAMES.get(idx, f'thing{idx}')}")
    (root).mkdir(parents=True, exist_ok=True)
    (root / "objectInfo150.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    scenes = []
    for k in range(1, count + 1):
        rng = _rng(seed, "ade20k", k)
        h, w = _size(rng, size)
        stem = f"ADE_train_{k:08d}"
        label, image = np.zeros((h, w), np.uint8), _image(rng, h, w)
        if k == 1:
            label[:] = 1
            image[:] = COLOURS[1]
            _scene(rng, h, w, [13, 150], label, image)
            label[: h // 6, : w // 6] = 0
        elif k != 2:
            pool = ADE_DRAWN if objects is None else np.arange(1, 151)
            n = int(rng.integers(1, 4)) if objects is None else objects
            _scene(rng, h, w, list(rng.choice(pool, n, replace=False)), label, image)
            label[: h // 5, :] = int(rng.choice([0, 1]))
        _write_jpg(root / "images" / "training" / f"{stem}.jpg", image)
        _write_png(root / "annotations" / "training" / f"{stem}.png", label)
        scenes.append(f"{stem} {'living_room' if k % 2 else 'street'}")
    (root / "sceneCategories.txt").write_text("\n".join(scenes) + "\n", encoding="utf-8")
    return root


# -------------------------------------------------------------------------------------------------- COCO-Stuff

def write_cocostuff(root: Path, coco: Path, seed: int = 0, count: int = 6, size: tuple[int, int] | None = None,
                    labels_txt: bool = True) -> Path:
    """COCO-Stuff label maps + their COCO images. Image 1 holds values {0, 95, 156, 181, 255}; image 2 is all 255."""
    from ..builders.qa.cocostuff import OFFICIAL_NAMES

    root.mkdir(parents=True, exist_ok=True)
    if labels_txt:
        (root / "labels.txt").write_text("0: unlabeled\n" + "".join(f"{k}: {n}\n" for k, n in
                                                                     enumerate(OFFICIAL_NAMES, 1)), encoding="utf-8")
    for k, coco_id in enumerate(COCO_IDS[:count], 1):
        rng = _rng(seed, "cocostuff", k)
        h, w = _size(rng, size)
        label, image = np.full((h, w), 255, np.uint8), _image(rng, h, w)
        if k == 1:
            label[:] = 156
            _scene(rng, h, w, [95, 0, 181], label, image)
            label[-3:, :] = 255
        elif k != 2:
            n = int(rng.integers(1, 4))
            _scene(rng, h, w, list(rng.choice(COCOSTUFF_DRAWN, n, replace=False)), label, image)
        _write_png(root / "train2017" / f"{coco_id:012d}.png", label)
        _write_jpg(coco / "train2017" / f"{coco_id:012d}.jpg", image)
    return root


# ----------------------------------------------------------------------------------------------- refer family

REFER_SPLITS = {"refcoco": ("train", "train", "testA", "val"), "refcoco+": ("train", "testB", "train", "val"),
                "refcocog": ("train", "train", "test", "val"), "refclef": ("train", "testC", "train", "val")}
REFER_PHRASES = ("man on the left", "the red car", "dog near the bench", "small cup on the table",
                 "woman in blue", "the tallest tree")


def _coco_polygon(pts: np.ndarray) -> list[float]:
    return [float(v) + 0.5 for v in pts.reshape(-1)]


def write_refer(root: Path, seed: int = 0, size: tuple[int, int] | None = None) -> Path:
    """refcoco / refcoco+ / refcocog (umd) on COCO train2014 images; refclef on SAIAPR images with RLE lists."""
    image_ids = COCO_IDS[:3]
    scenes = {}
    for image_id in image_ids:
        rng = _rng(seed, "refer", image_id)
        h, w = _size(rng, size)
        image = _image(rng, h, w)
        polys = [_polygon(rng, h, w) for _ in range(3)]
        for k, pts in enumerate(polys):
            _fill(image, pts, COLOURS[k])
        scenes[image_id] = (h, w, polys)
        _write_jpg(root / "images" / "mscoco" / "images" / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", image)
        _write_jpg(root / "images" / "saiapr_tc-12" / "00" / "images" / f"{image_id}.jpg", image)
    for name, splits in REFER_SPLITS.items():
        rng = _rng(seed, "refer", name)
        images, annotations = [], []
        for image_id in image_ids:
            h, w, polys = scenes[image_id]
            file_name = f"00/images/{image_id}.jpg" if name == "refclef" else f"COCO_train2014_{image_id:012d}.jpg"
            images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": h, "width": w,
                           "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": image_id})
            for k, pts in enumerate(polys):
                ann_id = image_id * 100 + k
                parts = [pts] if k else [pts, pts + np.array([3, 2], np.int32)]  # two overlapping polygons
                if name == "refclef":
                    segmentation = []
                    for part in parts:
                        m = np.zeros((h, w), np.uint8)
                        _fill(m, np.clip(part, 0, [w - 1, h - 1]), 1)
                        segmentation.append(encode_rle(m))
                else:
                    segmentation = [_coco_polygon(np.clip(p, 0, [w - 1, h - 1])) for p in parts]
                x, y, bw, bh = cv2.boundingRect(pts)
                annotations.append({"segmentation": segmentation, "area": float(bw * bh), "iscrowd": 0,
                                    "image_id": image_id, "bbox": [float(x), float(y), float(bw), float(bh)],
                                    "category_id": 1 + k, "id": ann_id})
        refs, sent_id = [], 0
        for ref_id, split in enumerate(splits):
            image_id = image_ids[ref_id % len(image_ids)]
            k = ref_id % 3
            sentences = []
            for j in range(1 + (ref_id % 3)):
                sent = REFER_PHRASES[(ref_id + j + len(name)) % len(REFER_PHRASES)]
                sentences.append({"tokens": sent.split(), "raw": sent.upper() + ("  " if j else ""),
                                  "sent_id": sent_id, "sent": sent + (" " if j == 1 else "")})
                sent_id += 1
            refs.append({"sent_ids": [s["sent_id"] for s in sentences],
                         "file_name": f"COCO_train2014_{image_id:012d}_{image_id * 100 + k}.jpg",
                         "ann_id": image_id * 100 + k, "ref_id": ref_id, "image_id": image_id, "split": split,
                         "sentences": sentences, "category_id": 1 + k})
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        instances = {"info": {"description": "synthetic"}, "images": images, "licenses": [],
                     "annotations": annotations, "categories": [{"supercategory": "thing", "id": c, "name": f"c{c}"}
                                                                for c in (1, 2, 3)]}
        (folder / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
        split_by = "umd" if name == "refcocog" else "unc"
        (folder / f"refs({split_by}).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


# ------------------------------------------------------------------------------------------------------- LLaVA

def write_llava(folder: Path, coco: Path, seed: int = 0) -> Path:
    """Items on COCO 2017 images (written by write_cocostuff): `<image>` first or last, 4 turns, unicode."""
    items = [
        {"id": f"{COCO_IDS[0]:012d}", "image": f"{COCO_IDS[0]:012d}.jpg", "conversations": [
            {"from": "human", "value": "What colour is the largest shape in the image?\n<image>"},
            {"from": "gpt", "value": "The largest shape is a light, sky-like region."}]},
        {"id": f"{COCO_IDS[2]:012d}", "image": f"{COCO_IDS[2]:012d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHow many objects can you see?"},
            {"from": "gpt", "value": "I can see two objects."},
            {"from": "human", "value": "Which one is closer to the left edge?"},
            {"from": "gpt", "value": "The darker one is closer to the left edge."}]},
        {"id": f"{COCO_IDS[3]:012d}", "image": f"{COCO_IDS[3]:012d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the scene briefly."},
            {"from": "gpt", "value": "A simple café scene — naïve shapes on a plain background."}]},
        {"id": f"{COCO_IDS[0]:012d}", "image": f"{COCO_IDS[0]:012d}.jpg", "conversations": [
            {"from": "human", "value": "Is there a person?\n<image>"},
            {"from": "gpt", "value": "Yes, there is a person-shaped region."}]},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llava_instruct_150k.json").write_text(json.dumps(items, indent=1, ensure_ascii=False),
                                                      encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------------------- PACO and PASCAL-Part

PACO_CATEGORIES = (
    {"id": 94, "name": "bicycle", "synset": "bicycle.n.01", "frequency": "f", "supercategory": "OBJECT"},
    {"id": 207, "name": "car_(automobile)", "synset": "car.n.01", "frequency": "f", "supercategory": "OBJECT"},
    {"id": 2000, "name": "car_(automobile):antenna", "synset": "antenna.n.01", "frequency": "f",
     "supercategory": "PART"},
    {"id": 2447, "name": "bicycle:wheel", "synset": "wheel.n.01", "frequency": "f", "supercategory": "PART"},
    {"id": 2448, "name": "trash_can:lid", "synset": "lid.n.01", "frequency": "c", "supercategory": "PART"},
)
PASCAL_CATEGORIES = ({"id": 1, "name": "aeroplane:body"}, {"id": 19, "name": "bus:license plate",
                                                           "abbr": "bus:liplate"},
                     {"id": 60, "name": "potted plant:pot"}, {"id": 61, "name": "person:hair"})


def _instance_rles(rng, h, w, n, image):
    out = []
    for k in range(n):
        pts = _polygon(rng, h, w)
        m = np.zeros((h, w), np.uint8)
        _fill(m, pts, 1)
        _fill(image, pts, COLOURS[k % len(COLOURS)])
        x, y, bw, bh = cv2.boundingRect(pts)
        out.append((encode_rle(m), [float(x), float(y), float(bw), float(bh)], int(m.sum())))
    return out


def write_paco(root: Path, coco: Path, seed: int = 0) -> Path:
    """`annotations/paco_lvis_v1_train.json` on COCO train2017 images; image 2 has only `coco_url`."""
    images, annotations, ann_id = [], [], 10
    cats = [c["id"] for c in PACO_CATEGORIES]
    for k, coco_id in enumerate(COCO_IDS[:3]):
        path = coco / "train2017" / f"{coco_id:012d}.jpg"
        h, w = cv2.imread(str(path)).shape[:2]
        rng = _rng(seed, "paco", coco_id)
        entry = {"id": coco_id, "width": w, "height": h, "neg_category_ids": [], "not_exhaustive_category_ids": [],
                 "neg_category_ids_attrs": [], "not_exhaustive_category_ids_attrs": [], "license": 1,
                 "coco_url": f"http://images.cocodataset.org/train2017/{coco_id:012d}.jpg"}
        if k != 1:
            entry["file_name"] = f"train2017/{coco_id:012d}.jpg"
        images.append(entry)
        obj_id = None
        for j, (rle, bbox, area) in enumerate(_instance_rles(rng, h, w, 3, np.zeros((h, w, 3), np.uint8))):
            cat = cats[(k + j) % len(cats)]
            is_object = cat < 1000
            obj_id = ann_id if is_object else (obj_id or ann_id)
            segmentation = [] if (k == 2 and j == 2) else rle
            annotations.append({"id": ann_id, "bbox": bbox, "area": float(area), "category_id": cat,
                                "image_id": coco_id, "segmentation": segmentation, "attribute_ids": [],
                                "dom_color_ids": [], "obj_ann_id": obj_id, "unknown_color": 0,
                                "unknown_pattern_marking": 0, "unknown_material": 0, "unknown_transparency": 0})
            ann_id += 1
    data = {"images": images, "annotations": annotations,
            "categories": [{**c, "image_count": 1, "instance_count": 1} for c in PACO_CATEGORIES],
            "part_categories": [{"id": 0, "name": "antenna"}], "attributes": [{"id": 0, "name": "black"}],
            "attr_type_to_attr_idxs": {"color": [0]}}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "paco_lvis_v1_train.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def write_pascal_part(root: Path, seed: int = 0, size: tuple[int, int] | None = None) -> Path:
    """VLPart's `train.json`: 10-digit image ids from the stem, annotation ids from 0, RLE with str counts."""
    images, annotations, ann_id = [], [], 0
    for k, stem in enumerate(("2008_000002", "2008_000003", "2008_000007")):
        rng = _rng(seed, "pascal_part", stem)
        h, w = _size(rng, size)
        image = _image(rng, h, w)
        image_id = int(stem[:4] + stem[5:])
        for j, (rle, bbox, _) in enumerate(_instance_rles(rng, h, w, 2, image)):
            annotations.append({"id": ann_id, "segmentation": rle, "bbox": bbox,
                                "category_id": PASCAL_CATEGORIES[(k + j) % len(PASCAL_CATEGORIES)]["id"],
                                "image_id": image_id, "iscrowd": 0, "area": bbox[2] * bbox[3]})
            ann_id += 1
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w})
        _write_jpg(root / "VOCdevkit" / "VOC2010" / "JPEGImages" / f"{stem}.jpg", image)
    data = {"images": images, "annotations": annotations, "categories": list(PASCAL_CATEGORIES)}
    (root / "train.json").write_text(json.dumps(data), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------------------- Mapillary

# A few of Mapillary Vistas v2.0's labels (`readable`, `name`, colour); "Pole" names two labels, as a readable
# string may, and the last is Mapillary's own "Unlabeled" class (value 9 here; 255 is the ignored value).
MAPILLARY_LABELS = (
    ("Bird", "animal--bird", (165, 42, 42)), ("Curb", "construction--barrier--curb", (196, 196, 196)),
    ("Road", "construction--flat--road", (128, 64, 128)), ("Sidewalk", "construction--flat--sidewalk", (244, 35, 232)),
    ("Building", "construction--structure--building", (70, 70, 70)), ("Person", "human--person--individual",
                                                                        (220, 20, 60)),
    ("Pole", "object--support--pole", (153, 153, 153)), ("Car", "object--vehicle--car", (0, 0, 142)),
    ("Pole", "object--support--pole-group", (153, 153, 154)), ("Unlabeled", "void--unlabeled", (0, 0, 0)),
)


def write_mapillary(root: Path, seed: int = 0, count: int = 4, size: tuple[int, int] | None = None) -> Path:
    """Mapillary Vistas v2.0 layout. Image 1 holds both "Pole" labels (6 and 8), Unlabeled (9) and 255; image 2 is
    all 255 (nothing to ask); the others 1-3 objects on a road."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    labels = [{"color": list(c), "instances": True, "readable": r, "name": n, "evaluate": n != "void--unlabeled"}
              for r, n, c in MAPILLARY_LABELS]
    (root / "config_v2.0.json").write_text(json.dumps({"labels": labels, "version": "2.0", "mapping": "public"},
                                                      indent=1), encoding="utf-8")
    palette = [v for _, _, c in MAPILLARY_LABELS for v in c]
    palette += [0] * (768 - len(palette))
    for k in range(1, count + 1):
        rng = _rng(seed, "mapillary", k)
        h, w = _size(rng, size)
        stem = f"{'abcdefghijklmnopqrstuv'[k]}{k:021d}"
        label, image = np.full((h, w), 255, np.uint8), _image(rng, h, w)
        if k == 1:
            label[:] = 9
            _scene(rng, h, w, [6, 8, 2], label, image)
            label[:3, :] = 255
        elif k != 2:
            label[h // 2:, :] = 2
            _scene(rng, h, w, list(rng.choice([0, 1, 3, 4, 5, 7], int(rng.integers(1, 4)), replace=False)),
                   label, image)
        png = Image.fromarray(label, mode="P")
        png.putpalette(palette)
        path = root / "training" / "v2.0" / "labels" / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        png.save(path)
        _write_jpg(root / "training" / "images" / f"{stem}.jpg", image)
    return root


# ------------------------------------------------------------------------------------------------------- all

def write_qa_sources(out: str | Path, seed: int = 0, ade20k: int = 6, reason_seg: int = 6,
                     size: tuple[int, int] | None = None) -> dict[str, Path]:
    """Write every synthetic source under `out` (the reference's `dataset/` tree); returns name -> folder, the
    names and folders `build qa --source NAME=DIR` takes."""
    out = Path(out)
    coco = out / "coco"
    paths = {
        "ade20k": write_ade20k(out / "ade20k", seed, ade20k, size),
        "cocostuff": write_cocostuff(out / "cocostuff", coco, seed, size=size),
        "refer_seg": write_refer(out / "refer_seg", seed, size),
        "llava_instruct": write_llava(out / "llava_dataset", coco, seed),
        "paco_lvis": write_paco(out / "vlpart" / "paco", coco, seed),
        "pascal_part": write_pascal_part(out / "vlpart" / "pascal_part", seed, size),
        "mapillary": write_mapillary(out / "mapillary", seed, size=size),
        "reason_seg": write_sample_release(out / "reason_seg" / "ReasonSeg", seed=seed,
                                           counts={"train": reason_seg}),
    }
    return paths
