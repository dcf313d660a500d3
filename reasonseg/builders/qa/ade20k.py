"""ADE20K SceneParsing (ADEChallengeData2016, 150 classes), docs/formats.md §3.1, docs/protocol.md §4.

Layout read: `images/training/<stem>.jpg` and `annotations/training/<stem>.png` (8-bit, 0 = other / ignored,
1..150 = objectInfo150 Idx). The reference's rule: value 0 becomes ignore, value v becomes class v-1, and class
v-1 is named by the reference's own list of 150 names (shipped here as `ade20k_class_names.json`; value 90 is
`television receiver`), not by the dataset's objectInfo150.txt or .csv, whose first synonyms are not always those
names. So the names are the same whichever class file an ADE20K copy holds, or none. Paths are joined from the
root, never derived by string replacement.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .items import Item, QASourceError, Source, relative_image
from .labelmaps import class_targets, column_major, present_values, read_label_png

NUM_CLASSES = 150
SUBSET = "training"
CLASS_NAMES_FILE = Path(__file__).with_name("ade20k_class_names.json")


@functools.cache
def class_names() -> dict[int, str]:
    """Pixel value (1..150) -> the reference's class name (value 90: `television receiver`)."""
    names = json.loads(CLASS_NAMES_FILE.read_text(encoding="utf-8"))
    assert len(names) == NUM_CLASSES, CLASS_NAMES_FILE   # shipped data, not user input
    return {value: name for value, name in enumerate(names, start=1)}


def open_source(root: Path, image_root: Path | None = None, **_) -> Source:
    image_root = image_root or root
    image_dir, label_dir = image_root / "images" / SUBSET, root / "annotations" / SUBSET
    if not image_dir.is_dir():
        raise QASourceError("image folder not found", path=str(image_dir),
                            hint="pass the ADEChallengeData2016 folder (holding images/ and annotations/)")
    value_names = class_names()
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
