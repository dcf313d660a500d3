"""Disk-backed lists for builds whose memory must not grow with the number of pairs.

- `Spool`: append-only JSON lines in a work folder, read back in order or sorted (external merge sort in runs of
  `RUN_SIZE` items, so sorting holds one run in memory, not the whole list);
- `Streamed` + `write_json`: write a JSON document some of whose lists or objects come from iterators, byte for
  byte what `json.dumps(document, indent=1)` would write for the materialised document.
"""
from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

RUN_SIZE = 1024
_END = object()


class Spool:
    """JSON values appended to a file (one a line), then read back in order or sorted."""

    def __init__(self, folder: Path, name: str):
        self.path = Path(folder) / f"{name}.jsonl"
        self._fh = open(self.path, "w", encoding="utf-8")
        self.count = 0
        self._runs = 0

    def add(self, item) -> None:
        self._fh.write(json.dumps(item, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __iter__(self) -> Iterator:
        self.close()
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    def sorted(self, key: Callable, run_size: int = RUN_SIZE) -> Iterator:
        """The items sorted by `key` (stable), holding at most `run_size` of them in memory at a time."""
        runs: list[Path] = []
        chunk: list = []
        for item in self:
            chunk.append(item)
            if len(chunk) >= run_size:
                runs.append(self._write_run(sorted(chunk, key=key)))
                chunk = []
        if not runs:
            yield from sorted(chunk, key=key)
            return
        if chunk:
            runs.append(self._write_run(sorted(chunk, key=key)))
        try:
            yield from heapq.merge(*(_read(r) for r in runs), key=key)
        finally:
            for r in runs:
                r.unlink(missing_ok=True)

    def _write_run(self, items: list) -> Path:
        self._runs += 1
        path = self.path.with_name(f"{self.path.stem}.run{self._runs}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        return path


def _read(path: Path) -> Iterator:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


class Streamed:
    """A JSON array (or, with `mapping`, an object from (key, value) pairs) whose items come from an iterable."""

    def __init__(self, items: Iterable, mapping: bool = False):
        self.items = items
        self.mapping = mapping


def write_json(fh, value, ensure_ascii: bool = True, level: int = 0) -> None:
    """Write `value` as `json.dumps(value, indent=1, ensure_ascii=...)` would, expanding `Streamed` parts."""
    streamed = isinstance(value, Streamed)
    if not streamed and not (isinstance(value, dict) and any(isinstance(v, Streamed) for v in value.values())):
        fh.write(json.dumps(value, indent=1, ensure_ascii=ensure_ascii).replace("\n", "\n" + " " * (level)))
        return
    mapping = value.mapping if streamed else True
    items = iter(value.items if streamed else value.items())
    opening, closing = ("{", "}") if mapping else ("[", "]")
    item = next(items, _END)
    if item is _END:
        fh.write(opening + closing)
        return
    fh.write(opening)
    pad = "\n" + " " * (level + 1)
    separator = ""
    while item is not _END:
        fh.write(separator + pad)
        if mapping:
            key, item = item
            fh.write(json.dumps(key, ensure_ascii=ensure_ascii) + ": ")
        write_json(fh, item, ensure_ascii, level + 1)
        separator = ","
        item = next(items, _END)
    fh.write("\n" + " " * level + closing)
