"""The on-disk cache: what reasonseg keeps between runs, and how to see and clear it.

One folder (`$REASONSEG_CACHE`, else `$XDG_CACHE_HOME/reasonseg`, else `~/.cache/reasonseg`) holds:
  ground-truth  `gt-<key>.npz`: a split's ground truth in scoring form (metrics/groundtruth.py)
  published     `published/<key>/`: the release layout of a published (Parquet) folder (published.py); a new one is
                written whenever the published files change, so old ones pile up until cleared
  calibration   `calibration/clipseg-<key>.json`: a CLIPSeg threshold chosen on train (baselines/clipseg.py)
Only names of these forms are listed or removed: anything else in the folder is left alone.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

KINDS = ("ground-truth", "published", "calibration")
_NAMES = {
    "ground-truth": (".", re.compile(r"gt-[0-9a-f]{32}(\.\d+\.tmp)?\.npz")),
    "published": ("published", re.compile(r"[0-9a-f]{32}")),
    "calibration": ("calibration", re.compile(r"clipseg-[0-9a-f]+\.json")),
}


def default_cache_dir() -> Path:
    env = os.environ.get("REASONSEG_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reasonseg"


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path
    bytes: int


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(os.lstat(os.path.join(folder, name)).st_size
               for folder, _, names in os.walk(path) for name in names)


def cache_entries(cache_dir: str | os.PathLike | None = None, kinds: tuple[str, ...] = KINDS) -> list[CacheEntry]:
    """What the cache holds, of the given kinds, sorted by kind then name."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    entries = []
    for kind in kinds:
        sub, pattern = _NAMES[kind]
        folder = cache / sub
        if not folder.is_dir():
            continue
        for name in sorted(os.listdir(folder)):
            path = folder / name
            is_folder = path.is_dir() and not path.is_symlink()
            if pattern.fullmatch(name) and is_folder == (kind == "published"):
                entries.append(CacheEntry(kind, path, _size(path)))
    return entries


def clear_cache(cache_dir: str | os.PathLike | None = None, kinds: tuple[str, ...] = KINDS) -> list[CacheEntry]:
    """Remove what the cache holds of the given kinds (only names reasonseg writes); returns what was removed."""
    removed = cache_entries(cache_dir, kinds)
    for entry in removed:
        if entry.kind == "published":
            shutil.rmtree(entry.path)
        else:
            entry.path.unlink()
    return removed
