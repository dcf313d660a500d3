"""The published form of a release read back: a folder written by `reasonseg publish` (or its copy on the Hub).

A published folder holds `data/<split>-NNNNN-of-NNNNN.parquet` (split `train`, `validation` or `test`; `val` is
accepted too), and beside it the release's `manifest.json` and `explanatory/train.json`. Each row keeps the image's
file bytes and name and the annotation file's bytes, so `export_release` writes the release layout back byte for
byte. Every command that reads a release reads this form too: `reasonseg.sources.release_root` asks
`materialized`, which writes the release layout once into the cache and returns that folder, so scoring the
published form runs the very code, on the very bytes, that scoring the folder runs. This module is an adapter
below `sources`: the release reader (`reasonseg.dataset`) knows nothing of it.

A Hub dataset id (`owner/name`, or `hf://datasets/owner/name`) is read from the local Hugging Face cache only;
nothing is downloaded. pyarrow (the `hub` extra) is imported only here, and only when a published form is read.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .dataset import IMAGE_SUFFIXES, MANIFEST
from .errors import DatasetError, OutputError
from .locations import close_path, hub_id, missing_path_error
from .schema import canonical_split

PARQUET_FILE = re.compile(r"^(train|validation|val|test)-\d{5}-of-\d{5}\.parquet$")
SAVED_SPLITS = ("train", "validation", "val", "test")
EXPLANATORY = "explanatory/train.json"
EXPORT_VERSION = 1


def published_files(root: Path) -> dict[str, list[Path]]:
    """The Parquet files of a published folder by release split (`validation` -> `val`), or the Arrow files of
    the DatasetDict `datasets` saved from it (`save_to_disk`); empty when none."""
    from .saved_datasets import saved_splits

    folder = root / "data"
    out: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = PARQUET_FILE.match(path.name)
            if match and path.is_file():
                out.setdefault(canonical_split(match.group(1)), []).append(path)
    if not out:
        out = {canonical_split(split): files for split, files in saved_splits(root).items()
               if split in SAVED_SPLITS and files}
    return out


def published_root(path: str | os.PathLike) -> Path | None:
    """`path` itself when it is a published folder; the snapshot folder of a Hub dataset id; None for another
    folder or file. A path that does not exist is an error (with a "did you mean"), never a Hub id."""
    if Path(path).exists():
        return Path(path) if Path(path).is_dir() and published_files(Path(path)) else None
    repo = hub_id(path)
    if repo is None:
        raise missing_path_error(path, "published folder")
    snapshot = hub_snapshot(repo, os.fspath(path))
    if not published_files(snapshot):
        raise DatasetError("the cached Hub dataset holds no data/<split>-NNNNN-of-NNNNN.parquet: not a published "
                           "ReasonSeg release", path=str(snapshot))
    return snapshot


def hub_snapshot(repo_id: str, name: str | None = None) -> Path:
    """The local snapshot folder of a Hub dataset already in the Hugging Face cache (no download); `name` is
    what the user gave, for the error."""
    from .extras import require_extra

    require_extra("hub", f"reading the Hub dataset {repo_id}", ("huggingface_hub",))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        close = close_path(name or repo_id)
        raise DatasetError(f"{name or repo_id!r} is not a folder, and no Hub dataset of that name is in the local "
                           "Hugging Face cache", hint=(f"did you mean {close}? " if close else "") + "for the Hub "
                           f"dataset: hf download {repo_id} --repo-type dataset") from None


# ----------------------------------------------------------------------------------------------------- export

def export_release(published: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write the release layout of a published folder (or cached Hub dataset id) into `out`: split folders with
    the images and annotation files byte for byte, manifest.json and explanatory/train.json as published.

    Returns {"out": Path, "splits": {split: rows}}. Nothing appears in `out` on an error."""
    from .outputs import staged_output_dir

    root = published_root(published)
    if root is None:
        raise DatasetError("not a published ReasonSeg folder: no data/<split>-NNNNN-of-NNNNN.parquet in it",
                           path=str(published), hint="give the folder `reasonseg publish --out` wrote")
    splits: dict[str, int] = {}
    outputs = ("train", "val", "test", MANIFEST, "explanatory")
    with staged_output_dir(out, overwrite, outputs) as tmp:
        _write_release(root, tmp, splits)
    return {"out": Path(out), "splits": splits}


def _write_release(root: Path, target: Path, splits: dict[str, int]) -> None:
    for split, files in published_files(root).items():
        folder = target / split
        folder.mkdir()
        taken: set[str] = set()
        for path in files:
            for sample_id, image_name, image, annotation in _rows(path):
                if sample_id.lower() in taken:
                    raise DatasetError("two rows of the split share this id", path=str(path), sample_id=sample_id,
                                       field="id")
                taken.add(sample_id.lower())
                with open(folder / image_name, "xb") as fh:
                    fh.write(image)
                with open(folder / f"{sample_id}.json", "xb") as fh:
                    fh.write(annotation)
        splits[split] = len(taken)
    for name in (MANIFEST, EXPLANATORY):
        if (root / name).is_file():
            (target / name).parent.mkdir(exist_ok=True)
            (target / name).write_bytes((root / name).read_bytes())


def _rows(path: Path):
    """(id, image file name, image bytes, annotation bytes) of each row, checked: a hostile file must not write
    outside its split folder or over another row's files."""
    pq = _pyarrow_parquet()
    import pyarrow as pa

    from .saved_datasets import arrow_batches, arrow_schema

    columns = ["id", "image", "annotation"]
    try:
        parquet = pq.ParquetFile(path) if path.suffix == ".parquet" else None
        names = set(parquet.schema_arrow.names if parquet else arrow_schema(path).names)
        missing = sorted(set(columns) - names)
        if missing:
            raise DatasetError(f"column {missing[0]!r} is missing: not a reasonseg publication (or one older than "
                               "the annotation column), so the release cannot be restored byte for byte",
                               path=str(path), field=missing[0], hint="publish the release again")
        batches = parquet.iter_batches(batch_size=32, columns=columns) if parquet else arrow_batches(path, columns)
        for batch in batches:
            for row in batch.to_pylist():
                yield _checked_row(row, path)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename:
            raise
        raise DatasetError(f"not a readable {'Parquet' if path.suffix == '.parquet' else 'Arrow'} file: {exc}",
                           path=str(path)) from None


def _checked_row(row: dict, path: Path) -> tuple[str, str, bytes, bytes]:
    sample_id, image, annotation = row.get("id"), row.get("image"), row.get("annotation")
    if not isinstance(sample_id, str) or not _plain_name(sample_id):
        raise DatasetError(f"id {sample_id!r} is not a plain file name", path=str(path), field="id")
    name = image.get("path") if isinstance(image, dict) else None
    if not isinstance(name, str) or not _plain_name(name) or Path(name).stem != sample_id \
            or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(f"image.path {name!r} is not <id> plus an image suffix", path=str(path),
                           sample_id=sample_id, field="image.path")
    if not isinstance(image.get("bytes"), bytes) or not isinstance(annotation, bytes):
        raise DatasetError("the image or annotation bytes are missing", path=str(path), sample_id=sample_id,
                           field="image.bytes" if not isinstance(image.get("bytes"), bytes) else "annotation")
    return sample_id, name, image["bytes"], annotation


def _plain_name(name: str) -> bool:
    return (0 < len(name) <= 200 and name not in (".", "..") and not name.startswith(".")
            and not any(c in name for c in "/\\\x00:") and name == name.strip())


def _pyarrow_parquet():
    from .extras import require_extra

    require_extra("hub", "reading the published (Parquet) form", ("pyarrow",))
    import pyarrow.parquet as pq

    return pq


# ------------------------------------------------------------------------------------------------------ cache

def materialized(root: Path) -> Path:
    """The release layout of the published folder `root`, written once into the cache and reused while the
    published files are unchanged (same names, sizes and modification times)."""
    from .cache import default_cache_dir

    digest = hashlib.sha256(f"v{EXPORT_VERSION}|{root.resolve()}".encode())
    for path in [p for files in published_files(root).values() for p in files] + [root / MANIFEST,
                                                                                  root / EXPLANATORY]:
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    folder = default_cache_dir() / "published"
    # Owner-only, like the ground-truth cache beside it: the restored release holds the hidden test annotations
    # a leaderboard may serve from.
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / digest.hexdigest()[:32]
    if not target.is_dir():
        try:
            export_release(root, target)
        except (OSError, OutputError):
            if not target.is_dir():
                raise
            # another process exported the same files first
    return target
