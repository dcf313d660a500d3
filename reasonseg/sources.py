"""Where a data source's samples come from: the one place that tells the forms apart.

A DATA argument may be
- a release folder (`train/ val/ test/` of `<id>.jpg + <id>.json`), read by `reasonseg.dataset`;
- a published folder (`reasonseg publish`), read through `reasonseg.published` as the release layout it restores;
- a Hub mirror in the Seg-Zero / VisionReasoner layout (`reasonseg.hub_mirror`): a folder of Parquet files as on
  the Hub, a `datasets` `save_to_disk` folder, or the folder `reasonseg publish --layout seg-zero` writes (one
  `ReasonSeg_<split>/` per split). It holds masks, not polygons, so it serves as ground truth for scoring only;
- a Hub dataset id (`owner/name`) of either Hub form, read from the local Hugging Face cache (no download).
A name that looks like a path (`reasonseg.locations`) and does not exist is reported as a path, with a "did you
mean". This module sits above the readers it dispatches to; none of them imports it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError
from .schema import SPLITS, Sample, canonical_split

RELEASE, PUBLISHED, MIRROR = "release", "published", "hub-mirror"
MIRROR_FOLDER = "ReasonSeg_{split}"     # one mirror per release split, as the Hub repositories are named


@dataclass(frozen=True)
class Source:
    kind: str       # RELEASE | PUBLISHED | MIRROR
    root: Path      # the folder as given (or the Hub snapshot); for PUBLISHED not yet the restored release
    name: str       # what the user gave

    def release(self) -> Path:
        """The release folder: the folder itself, or the published form's layout restored into the cache."""
        if self.kind == PUBLISHED:
            from .published import materialized

            return materialized(self.root)
        if self.kind == MIRROR:
            raise DatasetError("a Hub mirror (Seg-Zero/VisionReasoner layout) holds bool masks, not the release's "
                               "polygons and texts: it can be scored against, not read as a release",
                               path=self.name, hint="give the release folder or its published form")
        return self.root

    def mirror_files(self, split: str) -> list[Path]:
        """The Parquet or Arrow files of a mirror for a release split (its own split is always `test`)."""
        from .hub_mirror import mirror_files

        split = canonical_split(split)
        folder = self.root / MIRROR_FOLDER.format(split=split)
        files = mirror_files(folder) if folder.is_dir() else mirror_files(self.root)
        if not files:
            raise DatasetError(f"no Hub mirror of split {split!r} here", path=str(folder if folder.is_dir()
                                                                                 else self.root),
                               hint=f"expected data/test-NNNNN-of-NNNNN.parquet, or {folder.name}/ holding it")
        return files


def resolve(data: str | os.PathLike) -> Source:
    """Which form `data` is. A release folder is recognised from its split folders alone (the warm scoring path
    opens no file)."""
    name = os.fspath(data)
    path = Path(name)
    if path.is_dir():
        return _examine(path, name, hub=False)
    if path.exists():
        return Source(RELEASE, path, name)
    from .locations import hub_id, missing_path_error

    repo = hub_id(name)
    if repo is None:
        raise missing_path_error(name)
    from .published import hub_snapshot

    return _examine(hub_snapshot(repo, name), name, hub=True)


def _examine(root: Path, name: str, hub: bool) -> Source:
    saved = (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()   # `save_to_disk`'s layout
    if not saved and any((root / split).is_dir() for split in SPLITS):     # (a DatasetDict has a test/ folder)
        return Source(RELEASE, root, name)
    from .published import published_files

    published = published_files(root)
    if published or hub or saved or _mirror_folders(root):
        from .hub_mirror import mirror_files

        if mirror_files(root) or _mirror_folders(root):
            return Source(MIRROR, root, name)
    if published:
        return Source(PUBLISHED, root, name)
    if hub:
        raise DatasetError("the cached Hub dataset is neither a published ReasonSeg release (data/<split>-NNNNN-of-"
                           "NNNNN.parquet) nor a Hub mirror (data/test-*.parquet with a 'mask' column)",
                           path=str(root))
    return Source(RELEASE, root, name)


def _mirror_folders(root: Path) -> bool:
    return any((root / MIRROR_FOLDER.format(split=split)).is_dir() for split in SPLITS)


# ---------------------------------------------------------------------------------- the release readers, any form

def release_root(data: str | os.PathLike) -> Path:
    """The release folder behind `data`: the folder itself, or, for a published folder or a Hub dataset in the
    local Hugging Face cache, its release layout written once into the cache."""
    return resolve(data).release()


def split_dirs(data: str | os.PathLike, split: str) -> list[tuple[str, Path]]:
    from .dataset import split_dirs

    return split_dirs(release_root(data), split)


def load_split(data: str | os.PathLike, split: str, strict: bool = False) -> list[Sample]:
    """Every sample of a split (or joined splits such as `train_val`) of any data source that holds a release,
    with image sizes from headers."""
    from .dataset import load_split

    return load_split(release_root(data), split, strict)


def validate_release(data: str | os.PathLike, strict: bool = False):
    """An integrity report of the release behind `data` (a folder, a published folder, a cached Hub id)."""
    from .dataset import validate_release

    report = validate_release(release_root(data), strict)
    report.root = os.fspath(data)
    return report
