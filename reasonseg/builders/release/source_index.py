"""The OpenImages CSV rows a build needs, kept in a temporary SQLite file rather than in memory.

The official CSVs list millions of masks; a build reads each once, keeps the rows of the manifest's images, and
looks them up pair by pair, so the build's memory does not grow with the number of pairs.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Container
from pathlib import Path

from .openimages import OpenImagesLayout, iter_attribution, iter_mask_rows


class OpenImagesIndex:
    """Segmentation rows (MaskPath → LabelName, file order) and attribution per (split, ImageID)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        # A throw-away file: no journal, no fsync, and a small page cache (lookups are by index).
        self.db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -512;")
        self.db.executescript(
            "CREATE TABLE masks (split TEXT, image_id TEXT, k INTEGER, mask_path TEXT, label TEXT);"
            "CREATE TABLE attribution (split TEXT, image_id TEXT, doc TEXT, PRIMARY KEY (split, image_id));")

    def add_split(self, layout: OpenImagesLayout, split: str, image_ids: Container[str]) -> None:
        rows = ((split, r.image_id, k, r.mask_path, r.label)
                for k, r in enumerate(iter_mask_rows(layout.segmentation_csv(split), image_ids)))
        self.db.executemany("INSERT INTO masks VALUES (?, ?, ?, ?, ?)", rows)
        attribution = layout.attribution_csv(split)
        if attribution is not None:
            # Later rows win, as in a dict built from the file.
            self.db.executemany("INSERT OR REPLACE INTO attribution VALUES (?, ?, ?)",
                                ((split, i, json.dumps(doc)) for i, doc in iter_attribution(attribution, image_ids)))
        self.db.commit()

    def finish(self) -> None:
        self.db.execute("CREATE INDEX masks_by_image ON masks (split, image_id, k)")
        self.db.commit()

    def masks(self, split: str, image_id: str) -> dict[str, str]:
        """MaskPath → LabelName for the image, in file order (a repeated MaskPath keeps its last row)."""
        cursor = self.db.execute("SELECT mask_path, label FROM masks WHERE split = ? AND image_id = ? ORDER BY k",
                                 (split, image_id))
        return dict(cursor.fetchall())

    def attribution(self, split: str, image_id: str) -> dict[str, str]:
        row = self.db.execute("SELECT doc FROM attribution WHERE split = ? AND image_id = ?",
                              (split, image_id)).fetchone()
        return json.loads(row[0]) if row else {}

    def close(self) -> None:
        self.db.close()


class MemoryIndex:
    """The same lookups from dicts in memory (what the naive build does)."""

    def __init__(self) -> None:
        self._masks: dict[tuple[str, str], dict[str, str]] = {}
        self._attribution: dict[tuple[str, str], dict[str, str]] = {}

    def add_split(self, layout: OpenImagesLayout, split: str, image_ids: Container[str]) -> None:
        for row in iter_mask_rows(layout.segmentation_csv(split), image_ids):
            self._masks.setdefault((split, row.image_id), {})[row.mask_path] = row.label
        attribution = layout.attribution_csv(split)
        if attribution is not None:
            for image_id, doc in iter_attribution(attribution, image_ids):
                self._attribution[(split, image_id)] = doc

    def finish(self) -> None:
        pass

    def masks(self, split: str, image_id: str) -> dict[str, str]:
        return dict(self._masks.get((split, image_id), {}))

    def attribution(self, split: str, image_id: str) -> dict[str, str]:
        return self._attribution.get((split, image_id), {})

    def close(self) -> None:
        pass
