"""ADE20K SceneParsing (ADEChallengeData2016, 150 classes), docs/formats.md §3.1, docs/protocol.md §4.

Layout read: `images/training/<stem>.jpg`, `annotations/training/<stem>.png` (8-bit, 0 = other / ignored,
1..150 = objectInfo150 Idx) and `objectInfo150.txt` (TSV, synonyms joined by ", ") or `objectInfo150.csv`
(synonyms joined by ";"). The reference's rule: value 0 becomes ignore, value v becomes class v-1, and a class is
named by the first synonym. Paths are joined from the root, never derived by string replacement.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .items import Item, QASourceError, Source, relative_image
from .labelmaps import class_targets, column_major, present_values, read_label_png

NUM_CLASSES = 150
SUBSET = "training"


def read_class_names(root: Path) -> dict[int, str]:
    """Pixel value (1..150) -> first synonym, from objectInfo150.txt or objectInfo150.csv."""
    txt, csv_path = root / "objectInfo150.txt", root / "objectInfo150.csv"
    if txt.is_file():
        path, rows = txt, [line.split("\t") for line in txt.read_text(encoding="utf-8").splitlines()[1:] if line]
        names = {row[0].strip(): row[-1].split(",")[0].strip() for row in rows if len(row) >= 5}
    elif csv_path.is_file():
        with open(csv_path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        path = csv_path
        names = {(row.get("Idx") or "").strip(): (row.get("Name") or "").split(";")[0].strip() for row in rows}
    else:
        raise QASourceError("class list not found", path=str(txt),
                            hint="ADEChallengeData2016 ships objectInfo150.txt at its root; copy it there")
    try:
        out = {int(k): v for k, v in names.items()}
    except ValueError:
        raise QASourceError("class list has a non-integer Idx", path=str(path)) from None
    if sorted(out) != list(range(1, NUM_CLASSES + 1)) or not all(out.values()):
        raise QASourceError(f"class list must name classes 1..{NUM_CLASSES} exactly once", path=str(path))
    return out


def open_source(root: Path, image_root: Path | None = None, **_) -> Source:
    image_root = image_root or root
    image_dir, label_dir = image_root / "images" / SUBSET, root / "annotations" / SUBSET
    if not image_dir.is_dir():
        raise QASourceError("image folder not found", path=str(image_dir),
                            hint="pass the ADEChallengeData2016 folder (holding images/ and annotations/)")
    value_names = read_class_names(root)
    # Names by pixel value; class index (value - 1) is what the reference stores, the name is the same.
    stems = sorted(p.stem for p in image_dir.iterdir() if p.suffix == ".jpg")

    def load(stem: str) -> Item:
        item_id = f"ade20k/{stem}"
        image = relative_image(image_root, image_dir / f"{stem}.jpg", stem, "ade20k")
        label_path = label_dir / f"{stem}.png"
        raw = read_label_png(label_path, item_id)
        values = present_values(raw)
        if values.size and values[-1] > NUM_CLASSES:
            raise QASourceError(f"label value {int(values[-1])} is out of range (0..{NUM_CLASSES})",
                                path=str(label_path), sample_id=item_id, hint="is this an ADE20K-150 label map?")
        fortran = column_major(raw)
        ignore = fortran == 0
        return Item(stem, image, raw.shape[0], raw.shape[1], class_targets(values[values > 0], value_names),
                    mask_of=lambda v: (fortran == v).view(np.uint8), ignore=ignore if ignore.any() else None)

    return Source("ade20k", "sem_seg", root, image_root, lambda: stems, load,
                  {"images": len(stems), "classes": NUM_CLASSES})
