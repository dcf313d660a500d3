"""COCO-Stuff 164k label maps, docs/formats.md §4, docs/protocol.md §4.

Layout read: `<root>/train2017/<stem>.png` (8-bit; value = labels.txt id - 1, so 0 is person and 0..181 are
classes; 255 is unlabeled) and the COCO images `<coco>/train2017/<stem>.jpg`, where `<coco>` defaults to the
`coco` folder beside the root (the reference tree: dataset/cocostuff + dataset/coco; `--images cocostuff=DIR`
overrides it). Class names come from `<root>/labels.txt` when present ("<id>: <name>", line 0 unlabeled), else
from the official list below. The reference's rules: `sky-other` is named `sky`; every other class whose name
holds "-" is ignored, like the unlabeled value 255.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .items import Item, QASourceError, Source, relative_image
from .labelmaps import class_targets, column_major, present_values, read_label_png

UNLABELED = 255
NUM_CLASSES = 182
SUBSET = "train2017"
RENAMED = {"sky-other": "sky"}

# labels.txt ids 1..91 (COCO things, 11 of them without masks) and 92..182 (stuff); the pixel value of id k is
# k - 1, so OFFICIAL_NAMES[value] names a pixel value.
OFFICIAL_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet", "door", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "blender", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house",
    "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river",
    "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other",
    "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
assert len(OFFICIAL_NAMES) == NUM_CLASSES


def read_class_names(root: Path) -> list[str]:
    """Names by pixel value 0..181 (labels.txt ids 1..182)."""
    path = root / "labels.txt"
    if not path.is_file():
        return list(OFFICIAL_NAMES)
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        ident, sep, name = line.partition(":")
        if not sep or not ident.strip().isdigit():
            raise QASourceError(f"line {n} is not '<id>: <name>'", path=str(path))
        names[int(ident)] = name.strip()
    if sorted(names) != list(range(NUM_CLASSES + 1)):
        raise QASourceError(f"labels.txt must list ids 0..{NUM_CLASSES} (0 unlabeled)", path=str(path))
    return [names[k] for k in range(1, NUM_CLASSES + 1)]


def lisa_rules(names: list[str]) -> tuple[dict[int, str], np.ndarray]:
    """(kept value -> name, ignored values): `sky-other` -> `sky`, other names with '-' ignored."""
    renamed = [RENAMED.get(n, n) for n in names]
    ignored = np.array([v for v, n in enumerate(renamed) if "-" in n], np.int64)
    kept = {v: n for v, n in enumerate(renamed) if "-" not in n}
    return kept, ignored


def open_source(root: Path, image_root: Path | None = None, **_) -> Source:
    image_root = image_root or root.parent / "coco"
    label_dir = root / SUBSET
    if not label_dir.is_dir():
        raise QASourceError("label folder not found", path=str(label_dir),
                            hint="pass the COCO-Stuff folder holding train2017/*.png")
    kept, ignored = lisa_rules(read_class_names(root))
    is_ignored = np.zeros(256, bool)
    is_ignored[ignored] = True
    is_ignored[UNLABELED] = True
    stems = sorted(p.stem for p in label_dir.iterdir() if p.suffix == ".png")

    def load(stem: str) -> Item:
        item_id = f"cocostuff/{stem}"
        label_path = label_dir / f"{stem}.png"
        raw = read_label_png(label_path, item_id)
        image = relative_image(image_root, image_root / SUBSET / f"{stem}.jpg", stem, "cocostuff")
        values = present_values(raw)
        bad = values[(values >= NUM_CLASSES) & (values != UNLABELED)]
        if bad.size:
            raise QASourceError(f"label value {int(bad[0])} is out of range (0..{NUM_CLASSES - 1} or 255)",
                                path=str(label_path), sample_id=item_id,
                                hint="COCO-Stuff PNG values are labels.txt ids minus one")
        fortran = column_major(raw)
        ignore = is_ignored[fortran]
        return Item(stem, image, raw.shape[0], raw.shape[1], class_targets(values[~is_ignored[values]], kept),
                    mask_of=lambda v: (fortran == v).view(np.uint8), ignore=ignore if ignore.any() else None)

    return Source("cocostuff", "sem_seg", root, image_root, lambda: stems, load,
                  {"images": len(stems), "classes": len(kept), "ignored_classes": int(ignored.size)})
