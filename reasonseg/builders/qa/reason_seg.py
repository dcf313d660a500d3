"""ReasonSeg train, or `train_val` as the released v1 models were trained (docs/protocol.md §1, §4): every text of an
image asks for the same mask (`mask == 1`; the ignore polygons are reported as the record's ignore region), long
texts through the long templates, short ones through the short templates lower-cased. `explanatory/train.json`
adds the explanation of an image (matched by file name) that the explanatory turns use. Read through the
Foundation's release reader."""
from __future__ import annotations

from pathlib import Path

from ...dataset import load_split
from ...errors import DatasetError
from ...masks import rasterize_shapes
from .cocojson import read_json
from .items import Item, QASourceError, Source, Target

SPLIT = "train"
EXPLANATORY = Path("explanatory") / "train.json"


def read_explanations(root: Path) -> dict[str, str]:
    """Image file name -> `outputs`; empty when the release has no explanatory file."""
    path = root / EXPLANATORY
    if not path.is_file():
        return {}
    rows = read_json(path, "explanatory file")
    if not isinstance(rows, list):
        raise QASourceError("explanatory file must be a JSON list", path=str(path))
    out = {}
    for k, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("image"), str) and isinstance(row.get("outputs"), str)):
            raise QASourceError(f"entry {k} needs string 'image' and 'outputs'", path=str(path), field=f"[{k}]")
        out[Path(row["image"]).name] = row["outputs"]
    return out


def open_source(root: Path, image_root: Path | None = None, *, split: str = SPLIT, **_) -> Source:
    try:
        samples = {s.id: s for s in load_split(root, split)}
    except DatasetError as exc:
        raise QASourceError(exc.message, path=exc.path, sample_id=exc.sample_id, field=exc.field,
                            hint=exc.hint) from None
    explanations = read_explanations(root)
    image_root = image_root or root

    def load(key: str) -> Item:
        sample = samples[key]
        gt = rasterize_shapes(sample.shapes, sample.height, sample.width)
        kind = "long" if sample.is_sentence else "short"
        ignore = gt == 255
        return Item(key, sample.image_path.relative_to(root).as_posix(), sample.height, sample.width,
                    [Target(text, kind, 0) for text in sample.texts], mask_of=lambda _: (gt == 1).view("uint8"),
                    ignore=ignore if ignore.any() else None, explanation=explanations.get(sample.image_path.name))

    keys = sorted(samples)
    return Source("reason_seg", "reason_seg", root, image_root, lambda: keys, load,
                  {"images": len(keys), "explanations": len(explanations), "split": split})
