"""refCOCO, refCOCO+, refCOCOg (umd) and refCLEF, as lichengunc/refer lays them out (docs/formats.md §6).

Read from the `refer_seg` root: `<name>/refs(<split_by>).p` (a pickled list of ref dicts) and
`<name>/instances.json` (COCO-style; refclef segmentations are lists of RLEs), images under
`images/mscoco/images/train2014/` (refclef: `images/saiapr_tc-12/`) joined with the image's `file_name`.
An item is an image; its targets are every sentence (`sent`, stripped and lower-cased) of every ref of the image
in the chosen splits, each with its ref's annotation mask. Where the polygon parts of an annotation overlap, the
reference's loader sums them (2 there): `overlap="sum"`, what training uses; `overlap="clip"` unites them (0/1),
our fix, and what a QA record's RLE holds.

The pickle is read with an unpickler that refuses every class, so a hostile file cannot run code.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

from .cocojson import index_coco, read_json, segmentation_mask
from .items import Item, QASourceError, Source, Target, relative_image

SPLIT_BY = {"refclef": "unc", "refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
IMAGE_DIRS = {"refclef": ("images", "saiapr_tc-12")}
DEFAULT_IMAGE_DIR = ("images", "mscoco", "images", "train2014")
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refs pickle refers to {module}.{name}; only plain lists and dicts are read")


def read_refs(path: Path) -> list[dict]:
    """The refs list, each ref checked for the keys the builder uses."""
    if not path.is_file():
        raise QASourceError("refs pickle not found", path=str(path))
    try:
        refs = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - unpickling can fail in many ways; all mean a bad file
        raise QASourceError(f"refs pickle does not load: {exc}", path=str(path)) from None
    if not isinstance(refs, list):
        raise QASourceError(f"refs pickle holds a {type(refs).__name__}, expected a list of ref dicts",
                            path=str(path))
    for k, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise QASourceError(f"ref {k} is a {type(ref).__name__}, expected a dict", path=str(path))
        missing = [key for key in REF_KEYS if key not in ref]
        if missing:
            raise QASourceError(f"ref {k} lacks {', '.join(missing)}", path=str(path), field=missing[0])
        sentences = ref["sentences"]
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and isinstance(s.get("sent"), str)
                                                      for s in sentences):
            raise QASourceError(f"ref {k}: 'sentences' must be a list of dicts with a 'sent' string",
                                path=str(path), field="sentences")
    return refs


def open_source(root: Path, image_root: Path | None = None, *, name: str = "refcoco",
                splits: tuple[str, ...] = ("train",), overlap: str = "sum", **_) -> Source:
    if name not in SPLIT_BY:
        raise QASourceError(f"unknown refer dataset {name!r}; choose one of {', '.join(SPLIT_BY)}")
    folder = root / name
    refs_path, instances_path = folder / f"refs({SPLIT_BY[name]}).p", folder / "instances.json"
    refs = read_refs(refs_path)
    images, anns, _, _ = index_coco(read_json(instances_path, "instances.json"), instances_path,
                                    need=("images", "annotations"))
    image_dir = image_root or root.joinpath(*IMAGE_DIRS.get(name, DEFAULT_IMAGE_DIR))
    image_root = image_root or root
    wanted = set(splits)
    refs_by_image: dict[int, list[dict]] = {}
    for ref in refs:
        if "all" in wanted or ref["split"] in wanted:
            refs_by_image.setdefault(ref["image_id"], []).append(ref)
    keys = [str(i) for i in sorted(refs_by_image)]

    def load(key: str) -> Item:
        image_id, item_id = int(key), f"{name}/{key}"
        info = images.get(image_id)
        if info is None:
            raise QASourceError(f"image id {image_id} of a ref is not in instances.json", path=str(instances_path),
                                sample_id=item_id, field="image_id")
        height, width, file_name = info.get("height"), info.get("width"), info.get("file_name")
        if not (isinstance(height, int) and isinstance(width, int) and isinstance(file_name, str)):
            raise QASourceError("image entry needs integer height, width and a file_name", path=str(instances_path),
                                sample_id=item_id, field="images")
        image = relative_image(image_root, image_dir / file_name, key, name)
        targets = []
        for ref in sorted(refs_by_image[image_id], key=lambda r: r["ref_id"]):
            if ref["ann_id"] not in anns:
                raise QASourceError(f"ref {ref['ref_id']} points to annotation {ref['ann_id']}, which is not in "
                                    "instances.json", path=str(refs_path), sample_id=item_id, field="ann_id",
                                    hint="refs and instances.json must come from the same release")
            targets += [Target(s["sent"].strip().lower(), "refer", ref["ann_id"]) for s in ref["sentences"]]

        def mask_of(ann_id: int):
            return segmentation_mask(anns[ann_id].get("segmentation"), height, width, item_id, instances_path,
                                     overlap)

        return Item(key, image, height, width, targets, mask_of=mask_of)

    return Source(name, "refer_seg", root, image_root, lambda: keys, load,
                  {"refs": sum(len(v) for v in refs_by_image.values()), "images": len(keys), "splits": sorted(wanted),
                   "split_by": SPLIT_BY[name]})
