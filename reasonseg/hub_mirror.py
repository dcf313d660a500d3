"""The Hub mirrors' layout of ReasonSeg, as Seg-Zero and VisionReasoner read it (`Ricky06662/ReasonSeg_val`,
`Ricky06662/ReasonSeg_test`): read back as ground truth for scoring.

A mirror is one dataset whose only split is named `test` (the val mirror too), one row per annotation file of the
release split, with the columns of `MIRROR_COLUMNS`: the image, `mask` as nested bool lists (height x width) drawn
the LISA way and then cast to bool (so ignore regions count as target), the first text only, and the image size
as PIL reports it (no EXIF rotation). Three forms hold it: a folder of Parquet files as on the Hub
(`data/test-NNNNN-of-NNNNN.parquet`), `datasets`' `save_to_disk` layout (Arrow files), and a Hub id in the local
Hugging Face cache (resolved by `reasonseg.sources`). `reasonseg publish --layout seg-zero` writes the Parquet
form (`reasonseg.builders.seg_zero`).

Reading is bounded before any mask is decoded: every row's `img_height` x `img_width` must be a plausible image,
and a Parquet row group may hold no more mask values than its rows' sizes allow; each row's mask must then have
exactly `img_height` rows of `img_width` values. pyarrow (the `hub` extra) is imported only when a mirror is read.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .dataset import MAX_IMAGE_PIXELS
from .errors import DatasetError
from .masks import Intervals, mask_to_intervals

MIRROR_SPLIT = "test"   # both mirrors name their one split `test`, and the peers' loaders ask for it
MIRROR_COLUMNS = ("image", "mask", "text", "image_id", "ann_id", "img_height", "img_width")
MIRROR_FORM = "hub-mirror"
MIRROR_LOSSES = ("this ground truth is the Hub mirror's (Seg-Zero/VisionReasoner layout): it keeps only the first "
                 "text of each image, has no is_sentence (no short/long groups), and folds ignore regions into the "
                 "target")
PARQUET_FILE = re.compile(r"^test-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet$")
MAX_SPLIT_PIXELS = 4_000_000_000    # all masks of one split together: the real test split holds about 1e9
MAX_ID_LENGTH = 200


MirrorRow = tuple[str, int, int, str, Intervals]   # image_id, img_height, img_width, text, the mask's intervals


def mirror_features():
    """The `datasets` features the mirrors were created with (Seg-Zero's `create_reasonseg_hf.py`)."""
    from datasets import Features, Image, List, Value

    return Features({"image": Image(), "mask": List(List(Value("bool"))), "text": Value("string"),
                     "image_id": Value("string"), "ann_id": Value("string"), "img_height": Value("int64"),
                     "img_width": Value("int64")})


# ------------------------------------------------------------------------------------------------------ finding

def mirror_files(root: Path) -> list[Path]:
    """The files of a mirror's `test` split under `root` (Parquet as on the Hub, or a `save_to_disk` folder of a
    DatasetDict or of one Dataset); empty when `root` holds neither or its columns are not the mirror's."""
    from .saved_datasets import ONE_DATASET, saved_splits

    files = sorted(p for p in (root / "data").glob("test-*.parquet") if PARQUET_FILE.match(p.name) and p.is_file()) \
        if (root / "data").is_dir() else []
    if not files:
        saved = saved_splits(root)
        files = saved.get(MIRROR_SPLIT) or saved.get(ONE_DATASET) or []
    return files if files and _has_mirror_columns(files[0]) else []


def _has_mirror_columns(path: Path) -> bool:
    try:
        names = _schema(path).names
    except DatasetError:
        return False
    return set(MIRROR_COLUMNS) <= set(names)


def _schema(path: Path):
    pa = _pyarrow()
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).schema_arrow
        from .saved_datasets import arrow_schema

        return arrow_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"not a readable Parquet or Arrow file: {exc}", path=str(path)) from None


def _pyarrow():
    from .extras import require_extra

    require_extra("hub", "reading the Hub mirror (Parquet) form", ("pyarrow",))
    import pyarrow

    return pyarrow


# ------------------------------------------------------------------------------------------------------ reading

def read_mirror(files: list[Path]) -> tuple[list[MirrorRow], str]:
    """Every row of a mirror split, with the target of its bool mask as intervals, and a fingerprint of what
    scoring depends on (ids, sizes, texts, masks)."""
    rows: list[MirrorRow] = []
    seen: set[str] = set()
    digest = hashlib.sha256(b"hub-mirror\n")
    budget = [MAX_SPLIT_PIXELS]
    for path in files:
        for row in _file_rows(path, budget):
            sample_id, height, width, text, (starts, ends) = row
            if sample_id in seen:
                raise DatasetError("two rows of the mirror share this image_id", path=str(path), sample_id=sample_id,
                                   field="image_id")
            seen.add(sample_id)
            digest.update(json.dumps([sample_id, height, width, text]).encode() + b"\n")
            digest.update(starts.tobytes() + b"|" + ends.tobytes() + b"\n")
            rows.append(row)
    if not rows:
        raise DatasetError("the Hub mirror holds no rows", path=str(files[0].parent) if files else None)
    return rows, "sha256:" + digest.hexdigest()


def _file_rows(path: Path, budget: list[int]) -> Iterator[MirrorRow]:
    pa = _pyarrow()
    try:
        for batch in _batches(path, budget):
            yield from _batch_rows(batch, path)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename:
            raise
        raise DatasetError(f"not a readable Parquet or Arrow file: {exc}", path=str(path)) from None


def _batches(path: Path, budget: list[int]):
    """Record batches of the mirror's columns; a Parquet row group is checked against its sizes before its masks
    are read, an Arrow file (memory-mapped: nothing is decoded until a row is converted) row by row."""
    _pyarrow()      # the `hub` extra's error, before anything is opened
    columns = ["image_id", "text", "img_height", "img_width", "mask"]
    if path.suffix != ".parquet":
        from .saved_datasets import arrow_batches, arrow_schema

        _check_columns(arrow_schema(path).names, path)
        for batch in arrow_batches(path, columns):
            _spend(budget, _sizes(batch, path), path)
            yield batch
        return
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    _check_columns(parquet.schema_arrow.names, path)
    mask_leaf = [i for i in range(parquet.metadata.num_columns)
                 if parquet.metadata.schema.column(i).path.startswith("mask.")]
    for group in range(parquet.num_row_groups):
        sizes = parquet.read_row_group(group, columns=["image_id", "img_height", "img_width"])
        pixels = _spend(budget, _sizes(sizes, path), path)
        stored = sum(parquet.metadata.row_group(group).column(i).num_values for i in mask_leaf)
        if stored > pixels + sizes.num_rows:    # (+1 a row: an empty mask still stores one level)
            raise DatasetError(f"row group {group} stores {stored} mask values, more than its rows' img_height x "
                               f"img_width ({pixels})", path=str(path), field="mask")
        yield from parquet.read_row_group(group, columns=columns).to_batches()


def _check_columns(names: list[str], path: Path) -> None:
    missing = [c for c in MIRROR_COLUMNS if c not in names]
    if missing:
        raise DatasetError(f"column {missing[0]!r} is missing: not the Hub mirror's layout", path=str(path),
                           field=missing[0])


def _sizes(table, path: Path) -> list[tuple[str, int, int]]:
    """(image_id, height, width) of each row, each checked to be a plausible image."""
    out = []
    for sample_id, height, width in zip(table.column("image_id").to_pylist(), table.column("img_height").to_pylist(),
                                        table.column("img_width").to_pylist(), strict=True):
        if not isinstance(sample_id, str) or not 0 < len(sample_id) <= MAX_ID_LENGTH:
            raise DatasetError(f"image_id {str(sample_id)[:80]!r} is not a non-empty string of at most "
                               f"{MAX_ID_LENGTH} characters", path=str(path), field="image_id")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0
                and height * width <= MAX_IMAGE_PIXELS):
            raise DatasetError(f"img_height x img_width {height} x {width} is not an image size (at most "
                               f"{MAX_IMAGE_PIXELS} pixels)", path=str(path), sample_id=sample_id, field="img_height")
        out.append((sample_id, height, width))
    return out


def _spend(budget: list[int], sizes: list[tuple[str, int, int]], path: Path) -> int:
    pixels = sum(h * w for _, h, w in sizes)
    budget[0] -= pixels
    if budget[0] < 0:
        raise DatasetError(f"the mirror's masks add up to over {MAX_SPLIT_PIXELS} pixels: not a ReasonSeg split",
                           path=str(path), field="mask")
    return pixels


def _batch_rows(batch, path: Path) -> Iterator[MirrorRow]:
    texts = batch.column("text").to_pylist()
    masks = batch.column("mask")
    for i, (sample_id, height, width) in enumerate(_sizes(batch, path)):
        text = texts[i]
        if not isinstance(text, str):
            raise DatasetError("'text' must be a string", path=str(path), sample_id=sample_id, field="text")
        mask = _decoded_mask(masks.slice(i, 1), height, width, path, sample_id)
        yield sample_id, height, width, text, mask_to_intervals(mask)


def _decoded_mask(cell, height: int, width: int, path: Path, sample_id: str) -> np.ndarray:
    """One row's nested bool lists as a height x width array, refused unless its shape is exactly that."""
    import pyarrow.compute as pc

    if cell.null_count:
        raise DatasetError("'mask' is missing", path=str(path), sample_id=sample_id, field="mask")
    rows = cell.flatten()
    if len(rows) != height:
        raise DatasetError(f"'mask' has {len(rows)} rows, img_height is {height}", path=str(path),
                           sample_id=sample_id, field="mask")
    lengths = pc.min_max(rows.value_lengths())
    if rows.null_count or lengths["min"].as_py() != width or lengths["max"].as_py() != width:
        raise DatasetError(f"a 'mask' row is not {width} values long (img_width)", path=str(path),
                           sample_id=sample_id, field="mask")
    values = rows.flatten()
    if values.null_count:
        raise DatasetError("'mask' holds a null value", path=str(path), sample_id=sample_id, field="mask")
    return values.to_numpy(zero_copy_only=False).astype(bool, copy=False).reshape(height, width)
