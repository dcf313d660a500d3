"""Reading a built QA set back: records with decoded masks, for training (no torch import here).

    from reasonseg.builders.qa import QADataset
    data = QADataset("qa-out")                  # qa.jsonl + build.json
    rec = data[0]                               # random access (byte offsets indexed once)
    rec.image_path                              # absolute path: the source's image root + rec.image
    rec.masks                                   # list of H x W uint8 0/1 arrays, one per [SEG], in turn order
    rec.ignore                                  # H x W uint8 0/1 or None: pixels a loss may skip
    rec.turns                                   # [(human text, gpt text), ...]; the first human text has <image>
    rec.reference_conversations                 # one conversation per templated question, each with <image>
    for rec in data: ...                        # streaming, one line at a time
"""
from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BuildError
from ...masks import decode_rle
from .build import BUILD_FILE, QA_FILE
from .records import per_question


@dataclass
class QARecord:
    id: str
    source: str
    image: str                                   # relative to the source's image root
    image_path: Path | None                      # resolved, when the image root is known
    conversations: list[dict]
    masks: list[np.ndarray] = field(repr=False)
    ignore: np.ndarray | None = field(repr=False)
    targets: list[str]
    templates: list[list[str]]

    @property
    def reference_conversations(self) -> list[list[dict]]:
        """The reference's layout: one conversation per templated question, each opening with `<image>`."""
        return per_question(self.conversations, bool(self.templates))

    @property
    def turns(self) -> list[tuple[str, str]]:
        c = self.conversations
        return [(c[k]["value"], c[k + 1]["value"]) for k in range(0, len(c) - 1, 2)]


class QADataset:
    """The records of `qa.jsonl` in `folder`. `image_roots` overrides build.json's per-source image roots (when the
    data moved); `decode_masks=False` keeps masks as RLE dicts (`rec.masks` then holds the dicts)."""

    def __init__(self, folder: str | os.PathLike, image_roots: dict[str, str | os.PathLike] | None = None,
                 decode_masks: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / QA_FILE
        if not self.path.is_file():
            raise BuildError("QA file not found", path=str(self.path), hint="run `reasonseg build qa` first")
        log_path = self.folder / BUILD_FILE
        self.build = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
        roots = {name: Path(s["image_root"]) for name, s in self.build.get("sources", {}).items()}
        roots.update({name: Path(p) for name, p in (image_roots or {}).items()})
        self.image_roots = roots
        self.decode_masks = decode_masks
        self._offsets: array | None = None

    def _index(self) -> array:
        if self._offsets is None:
            offsets, position = array("q"), 0
            with open(self.path, "rb") as fh:
                for line in fh:
                    if line.strip():
                        offsets.append(position)
                    position += len(line)
            self._offsets = offsets
        return self._offsets

    def __len__(self) -> int:
        return len(self._index())

    def __getitem__(self, index: int) -> QARecord:
        offsets = self._index()
        with open(self.path, "rb") as fh:
            fh.seek(offsets[index])
            return self.record(json.loads(fh.readline()))

    def __iter__(self) -> Iterator[QARecord]:
        for raw in self.raw_records():
            yield self.record(raw)

    def raw_records(self) -> Iterator[dict]:
        """The JSON records as stored (masks as RLE), streamed."""
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BuildError(f"line {n} is not JSON: {exc.msg}", path=str(self.path)) from None

    def record(self, raw: dict) -> QARecord:
        root = self.image_roots.get(raw["source"])
        decode = decode_rle if self.decode_masks else (lambda r: r)
        ignore = raw.get("ignore")
        return QARecord(raw["id"], raw["source"], raw["image"], root / raw["image"] if root else None,
                        raw["conversations"], [decode(m) for m in raw["masks"]],
                        decode(ignore) if ignore else None, raw["targets"], raw["templates"])
