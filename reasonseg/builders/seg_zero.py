"""`reasonseg publish --layout seg-zero`: a release written in the Hub mirrors' layout that Seg-Zero and
VisionReasoner evaluate on (`reasonseg.hub_mirror` reads it back).

For each release split, `out/ReasonSeg_<split>/` is one dataset whose only split is named `test`, as both mirrors
name theirs (their loaders call `load_dataset(path, split="test")`):

    out/ReasonSeg_<split>/data/test-00000-of-00001.parquet   one row per annotation file, sorted by file name
    out/ReasonSeg_<split>/README.md                           a short card: the data_files config, what was lost

The rows are made as the mirrors were: the image's size as PIL reports it (no EXIF rotation), the LISA drawing of
the polygons at that size cast to bool (so ignore regions become target), the first text only, and the sample
id as both `image_id` and `ann_id`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BuildError
from ..hub_mirror import MIRROR_LOSSES, MIRROR_SPLIT, mirror_features
from ..schema import Sample
from ..sources import MIRROR_FOLDER

BATCH = 8   # rows per Parquet write: a row holds its whole mask as nested lists
MAX_BATCH_PIXELS = 1 << 30
PARQUET = f"data/{MIRROR_SPLIT}-00000-of-00001.parquet"


def write_mirrors(kept: dict[str, list[Sample]], out: Path) -> dict[str, dict]:
    """One mirror folder per split of `kept` under `out`; returns each split's numbers (rows, sources)."""
    splits = {}
    for split, samples in kept.items():
        if samples:
            folder = out / MIRROR_FOLDER.format(split=split)
            splits[split] = write_mirror_split(samples, folder / PARQUET)
            (folder / "README.md").write_text(mirror_card(split, splits[split]["rows"]), encoding="utf-8")
    return splits


def write_mirror_split(samples: list[Sample], path: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = mirror_features().arrow_schema
    ordered = sorted(samples, key=lambda s: s.json_path.name)   # the mirrors sorted the annotation files
    stats: dict = {"rows": 0, "sources": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(ordered):
            columns = {name: [row[name] for row in batch] for name in schema.names if name != "mask"}
            columns["mask"] = _nested_bool_lists([row["mask"] for row in batch])
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            stats["rows"] += len(batch)
    for sample in ordered:
        source = sample.source or "unknown"
        stats["sources"][source] = stats["sources"].get(source, 0) + 1
    return stats


def _batches(samples: list[Sample]):
    """Rows in groups of at most BATCH, and of fewer mask values than a list array's 32-bit offsets hold."""
    batch: list[dict] = []
    pixels = 0
    for sample in samples:
        row = mirror_row(sample)
        if batch and (len(batch) == BATCH or pixels + row["mask"].size > MAX_BATCH_PIXELS):
            yield batch
            batch, pixels = [], 0
        batch.append(row)
        pixels += row["mask"].size
    if batch:
        yield batch


def mirror_row(sample: Sample) -> dict:
    """A sample as the mirrors hold it."""
    from PIL import Image

    from ..masks import rasterize_shapes

    if not sample.texts:
        raise BuildError("the sample has no text, and the mirror layout keeps the first one",
                         path=str(sample.json_path), sample_id=sample.id, field="text")
    with Image.open(sample.image_path) as image:
        width, height = image.size      # as stored: the mirrors read the size from PIL, EXIF orientation unapplied
    mask = rasterize_shapes(sample.shapes, height, width) != 0     # ignore (255) becomes target, as a bool cast
    return {"image": {"bytes": sample.image_path.read_bytes(), "path": sample.image_path.name}, "mask": mask,
            "text": sample.texts[0], "image_id": sample.id, "ann_id": sample.id, "img_height": height,
            "img_width": width}


def _nested_bool_lists(masks: list):
    """list<list<bool>> of 2-D bool arrays, built from their bytes (a Python list per pixel row would cost far
    more)."""
    import numpy as np
    import pyarrow as pa

    values = pa.array(np.concatenate([m.reshape(-1) for m in masks]) if masks else np.zeros(0, bool))
    row_ends = np.cumsum([m.shape[1] for m in masks for _ in range(m.shape[0])], dtype=np.int64)
    rows = pa.ListArray.from_arrays(pa.array(np.concatenate(([0], row_ends)).astype(np.int32)), values)
    mask_ends = np.cumsum([m.shape[0] for m in masks], dtype=np.int64)
    return pa.ListArray.from_arrays(pa.array(np.concatenate(([0], mask_ends)).astype(np.int32)), rows)


def mirror_card(split: str, rows: int) -> str:
    return f"""---
configs:
- config_name: default
  data_files:
  - split: {MIRROR_SPLIT}
    path: data/{MIRROR_SPLIT}-*.parquet
---

# ReasonSeg {split} in the Hub mirrors' layout (Seg-Zero / VisionReasoner)

{rows} rows, one per image of the release's `{split}/` folder, written by `reasonseg publish --layout seg-zero`.
The dataset's only split is named `{MIRROR_SPLIT}` (as in the mirrors), so the loaders of those repositories read it as
`load_dataset("<this folder>", split="{MIRROR_SPLIT}")`.

Columns: `image`, `mask` (height x width bool lists: the LISA drawing of the polygons cast to bool), `text` (the
first instruction), `image_id` and `ann_id` (the sample id), `img_height`, `img_width` (as PIL reports them).

What this layout loses against the release: {MIRROR_LOSSES}. Score with the release (or `reasonseg publish`'s
default layout) for numbers under the LISA protocol.
"""
