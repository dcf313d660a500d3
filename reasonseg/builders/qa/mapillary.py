"""Mapillary Vistas v2.0, the fifth semantic source of the reference's default mix.

Layout read (the reference's `dataset/mapillary`): `config_v2.0.json` (`labels`: a list whose i-th entry names
pixel value i by its `readable` string), `training/v2.0/labels/<stem>.png` (8-bit, grey or indexed: the value is
the label index) and `training/images/<stem>.jpg`. Items are the label maps (sorted), as the reference globs them.

The reference's rules: a class is named by `readable` lower-cased; only value 255 is left out of the classes one
can ask about (Mapillary's own `unlabeled` label is asked like any other); the mask of a class is
`label == <first index with that name>`, so two labels sharing a readable name both ask for the first one's pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .cocojson import read_json
from .items import Item, QASourceError, Source, Target, relative_image
from .labelmaps import column_major, present_values, read_label_png

CONFIG = "config_v2.0.json"
LABELS = Path("training") / "v2.0" / "labels"
IMAGES = Path("training") / "images"
IGNORED = 255


def read_class_names(root: Path) -> list[str]:
    """`labels[i].readable`, lower-cased, by pixel value i."""
    path = root / CONFIG
    doc = read_json(path, "Mapillary config")
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, list) or not labels:
        raise QASourceError("expected an object with a non-empty 'labels' list", path=str(path), field="labels")
    names = []
    for k, label in enumerate(labels):
        readable = label.get("readable") if isinstance(label, dict) else None
        if not isinstance(readable, str) or not readable.strip():
            raise QASourceError(f"label {k} has no 'readable' string", path=str(path), field=f"labels[{k}].readable")
        names.append(readable.lower())
    if len(names) > IGNORED:
        raise QASourceError(f"{len(names)} labels do not fit 8-bit label maps (0..254; 255 is ignored)",
                            path=str(path), field="labels")
    return names


def open_source(root: Path, image_root: Path | None = None, **_) -> Source:
    image_root = image_root or root
    label_dir = root / LABELS
    if not label_dir.is_dir():
        raise QASourceError("label folder not found", path=str(label_dir),
                            hint="pass the Mapillary Vistas folder holding config_v2.0.json and training/")
    names = read_class_names(root)
    first_value = {}
    for value, name in enumerate(names):
        first_value.setdefault(name, value)
    stems = sorted(p.stem for p in label_dir.iterdir() if p.suffix == ".png")

    def load(stem: str) -> Item:
        item_id = f"mapillary/{stem}"
        label_path = label_dir / f"{stem}.png"
        raw = read_label_png(label_path, item_id)
        image = relative_image(image_root, image_root / IMAGES / f"{stem}.jpg", stem, "mapillary")
        values = present_values(raw)
        values = values[values != IGNORED]
        if values.size and values[-1] >= len(names):
            raise QASourceError(f"label value {int(values[-1])} is out of range (0..{len(names) - 1} or 255)",
                                path=str(label_path), sample_id=item_id, hint=f"is {CONFIG} the v2.0 config?")
        fortran = column_major(raw)
        ignore = fortran == IGNORED
        targets = [Target(names[v], "class", first_value[names[v]]) for v in values.tolist()]
        return Item(stem, image, raw.shape[0], raw.shape[1], targets,
                    mask_of=lambda v: (fortran == v).view(np.uint8), ignore=ignore if ignore.any() else None)

    return Source("mapillary", "sem_seg", root, image_root, lambda: stems, load,
                  {"images": len(stems), "classes": len(names), "config": CONFIG})
