"""Writing results into the release: sample texts, the explanatory file and the manifest record.

Every file is replaced atomically (temp file + rename), so a kill at any moment leaves each file old or new.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ...dataset import MANIFEST, atomic_write_text, build_manifest, read_annotation, read_manifest, sha256_file
from ...errors import DatasetError
from .checks import normalize
from .plan import EXPLANATORY, MAX_TEXTS

SOURCES_KEY = "rephrase_sources"  # in a sample JSON: rephrased text -> the cache key of the reply it came from


def merge_texts(texts: list[str], outputs: tuple[str, ...] | list[str]) -> tuple[list[str], list[str], int]:
    """(new text list, the texts added, duplicates dropped): originals first, at most MAX_TEXTS in all."""
    merged = list(texts)
    seen = {normalize(t) for t in texts}
    added, duplicates = [], 0
    for text in outputs:
        if len(merged) >= MAX_TEXTS:
            break
        if normalize(text) in seen:
            duplicates += 1
            continue
        seen.add(normalize(text))
        merged.append(text)
        added.append(text)
    return merged, added, duplicates


def add_rephrasings(json_path: Path, outputs: tuple[str, ...], key: str, sample_id: str) -> tuple[int, int]:
    """Add accepted rephrasings to one sample's `text` (keeping every other key); (added, duplicates)."""
    data, encoding = read_annotation(json_path)
    texts = data.get("text")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise DatasetError("'text' must be a list of strings", path=str(json_path), sample_id=sample_id,
                           field="text")
    merged, added, duplicates = merge_texts(texts, outputs)
    if not added:
        return 0, duplicates
    sources = data.get(SOURCES_KEY) if isinstance(data.get(SOURCES_KEY), dict) else {}
    sources.update({text: key for text in added})
    data["text"] = merged
    data[SOURCES_KEY] = sources
    # Rewritten as UTF-8 whatever it was read as (cp1252 files in the public release included).
    atomic_write_text(json_path, json.dumps(data, ensure_ascii=False))
    return len(added), duplicates


def write_explanatory(root: Path, entries: list[dict]) -> Path:
    path = root / EXPLANATORY
    atomic_write_text(path, json.dumps(entries, ensure_ascii=False, indent=2) + "\n")
    return path


def remove_stale_temp_files(folders: list[Path]) -> int:
    """Temp files a killed writer left behind (`.<name>.<random>.tmp`): never a valid file, safe to delete."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    pass
    return removed


def stale_checksums(root: Path, manifest: dict | None, paths: list[Path]) -> list[str]:
    """Relative paths among `paths` whose manifest checksum is missing or differs (e.g. after a killed run)."""
    if manifest is None:
        return []
    files = manifest.get("files", {})
    out = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        if path.is_file() and files.get(rel) != sha256_file(path):
            out.append(rel)
    return out


def update_manifest(root: Path, changed: list[str], record: dict) -> Path:
    """Recompute the checksums of the changed files and append the run's record under `rephrase`; a release
    without a manifest gets a full one (the contract of reasonseg.dataset) with the record."""
    manifest = read_manifest(root)
    if manifest is None:
        manifest = build_manifest(root, name=root.resolve().name, version="unversioned")
    else:
        files = manifest.setdefault("files", {})
        for rel in changed:
            path = root / rel
            if path.is_file():
                files[rel] = sha256_file(path)
        manifest["files"] = dict(sorted(files.items()))
    history = manifest.get("rephrase")
    if not isinstance(history, list):
        history = [] if history is None else [history]
    history.append(record)
    manifest["rephrase"] = history
    path = root / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return path


def relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()
