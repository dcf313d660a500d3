"""Part segmentation from COCO-style JSON: PACO-LVIS and PASCAL-Part (VLPart's conversion), docs/formats.md §5.

Each annotation instance is a target. A category `obj:part` is asked as `obj part` or `the part of the obj`
(a coin flip per turn); PACO names lose everything from `_(` on each side (`car_(automobile)` -> `car`),
underscores are kept; PACO's whole-object categories are asked by their name. PASCAL-Part names must hold exactly
one colon. An annotation with an empty segmentation (PACO has some) is a target marked `empty`: the exhaustive
build leaves it out, the lisa sampler redraws the sample that picks it, as the reference does.

- PACO-LVIS: `<root>/annotations/paco_lvis_v1_train.json`; images are `<coco>/<file_name>` (`train2017/...`),
  `<coco>` defaulting to the `coco` folder two levels up (dataset/vlpart/paco -> dataset/coco). An image without
  `file_name` (LVIS v1 style) takes the last two parts of its `coco_url`.
- PASCAL-Part: `<root>/train.json`; images are `<root>/VOCdevkit/VOC2010/JPEGImages/<file_name>`.
"""
from __future__ import annotations

from pathlib import Path

from .cocojson import index_coco, read_json, segmentation_mask
from .items import Item, QASourceError, Source, Target, relative_image

FILES = {"paco_lvis": Path("annotations") / "paco_lvis_v1_train.json", "pascal_part": Path("train.json")}
PASCAL_IMAGES = Path("VOCdevkit") / "VOC2010" / "JPEGImages"


def paco_target_name(name: str) -> tuple[str, tuple[str, str] | None]:
    """(object name, (object, part) or None) by the reference's PACO rule."""
    if ":" in name:
        obj, part = (side.split("_(")[0] for side in name.split(":", 1))
        return f"{obj}:{part}", (obj, part)
    return name.split("_(")[0], None


def pascal_target_name(name: str, path: Path) -> tuple[str, tuple[str, str]]:
    sides = name.strip().split(":")
    if len(sides) != 2:
        raise QASourceError(f"category {name!r} must be 'object:part' with exactly one colon", path=str(path),
                            field="categories")
    return f"{sides[0]}:{sides[1]}", (sides[0], sides[1])


def open_source(root: Path, image_root: Path | None = None, *, name: str = "paco_lvis", **_) -> Source:
    path = root / FILES[name]
    images, _, anns_by_image, cats = index_coco(read_json(path, f"{name} annotations"), path)
    naming = {}
    for cat_id, cat in cats.items():
        if not isinstance(cat.get("name"), str):
            raise QASourceError(f"category {cat_id} has no string name", path=str(path), field="categories")
        naming[cat_id] = (paco_target_name(cat["name"]) if name == "paco_lvis"
                          else pascal_target_name(cat["name"], path))
    if name == "paco_lvis":
        image_root = image_root or root.parent.parent / "coco"
        image_dir = image_root
    else:
        image_dir = image_root or root / PASCAL_IMAGES
        image_root = image_root or root
    keys = [str(i) for i in sorted(images)]

    def file_name(info: dict, where: str) -> str:
        if isinstance(info.get("file_name"), str):
            return info["file_name"]
        url = info.get("coco_url")
        if isinstance(url, str) and url.count("/") >= 2:
            return "/".join(url.rstrip("/").split("/")[-2:])
        raise QASourceError("image has neither 'file_name' nor 'coco_url'", path=str(path), sample_id=where,
                            field="images")

    def load(key: str) -> Item:
        image_id, where = int(key), f"{name}/{key}"
        info = images[image_id]
        height, width = info.get("height"), info.get("width")
        if not (isinstance(height, int) and isinstance(width, int)):
            raise QASourceError("image needs integer height and width", path=str(path), sample_id=where,
                                field="images")
        image = relative_image(image_root, image_dir / file_name(info, where), key, name)
        targets, by_id = [], {}
        for ann in sorted(anns_by_image.get(image_id, []), key=lambda a: a["id"]):
            if ann.get("category_id") not in naming:
                raise QASourceError(f"annotation {ann['id']} has unknown category {ann.get('category_id')}",
                                    path=str(path), sample_id=where, field="category_id")
            label, obj_part = naming[ann["category_id"]]
            targets.append(Target(label, "part" if obj_part else "object", ann["id"], obj_part,
                                  empty=ann.get("segmentation") in (None, [], {})))
            by_id[ann["id"]] = ann

        def mask_of(ann_id: int):
            return segmentation_mask(by_id[ann_id]["segmentation"], height, width, where, path)

        return Item(key, image, height, width, targets, mask_of=mask_of)

    return Source(name, "sem_seg", root, image_root, lambda: keys, load,
                  {"images": len(keys), "categories": len(cats), "file": FILES[name].as_posix()})
