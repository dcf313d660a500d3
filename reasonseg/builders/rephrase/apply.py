"""Writing results into the release: sample texts, the explanatory file and the manifest record.

Every file is replaced atomically (temp file + rename), so a kill at any moment leaves each file old or new.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ...dataset import MANIFEST, atomic_write_text, build_manifest, read_annotation, read_manifest, sha256_file
from ...errors import DatasetError
from .checks import normalize
from .plan import EXPLANATORY, MAX_TEXTS

SOURCES_KEY = "rephrase_sources"  # in a sample JSON: rephrased text -> the cache key of the reply it came from

# Called with (path, checksum the file will have) just before a release file is replaced: the run journals it.
BeforeWrite = Callable[[Path, str], None]


def write_release_file(path: Path, text: str, before_write: BeforeWrite) -> None:
    before_write(path, "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest())
    atomic_write_text(path, text)


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


def add_rephrasings(json_path: Path, outputs: tuple[str, ...], key: str, sample_id: str,
                    before_write: BeforeWrite) -> tuple[int, int]:
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
    write_release_file(json_path, json.dumps(data, ensure_ascii=False), before_write)
    return len(added), duplicates


def write_explanatory(root: Path, entries: list[dict], before_write: BeforeWrite) -> Path:
    path = root / EXPLANATORY
    write_release_file(path, json.dumps(entries, ensure_ascii=False, indent=2) + "\n", before_write)
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


def written_as_journaled(root: Path, writes: list[dict], manifest: dict | None) -> list[str]:
    """Relative paths whose file now has the checksum a run journaled before replacing it, and not yet in the
    manifest: the replacement happened (a kill before the rename leaves the old file, and a file changed since
    by hand is not blessed)."""
    listed = (manifest or {}).get("files", {})
    out = []
    for write in writes:
        path = root / write["rel"]
        if write["rel"] in out or not path.is_file():
            continue
        checksum = sha256_file(path)
        if checksum == write["sha256"] and listed.get(write["rel"]) != checksum:
            out.append(write["rel"])
    return out


def recorded_runs(manifest: dict | None) -> set[str]:
    history = (manifest or {}).get("rephrase")
    history = history if isinstance(history, list) else [history]
    return {r["run_id"] for r in history if isinstance(r, dict) and isinstance(r.get("run_id"), str)}


def update_manifest(root: Path, changed: list[str], records: list[dict]) -> Path:
    """Recompute the checksums of the changed files and append the runs' records under `rephrase` (one per run
    id); a release without a manifest gets a full one (the contract of reasonseg.dataset) with the records."""
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
    known = recorded_runs(manifest)
    history.extend(r for r in records if r.get("run_id") is None or r["run_id"] not in known)
    manifest["rephrase"] = history
    path = root / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return path


def relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()
