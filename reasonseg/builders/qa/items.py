"""What every source reader yields: an image with the things one can ask about it (targets), and the helpers that
turn targets into masks once.

A source reader is small: it lists its item keys (`keys()`, a deterministic order) and loads one item by key
(`load(key)`), raising `QASourceError` for a bad item. Everything else (templates, sampling, chunking, writing) is
shared, so the label rules of a dataset live in its reader alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BuildError
from ...masks import encode_rle

GROUPS = ("sem_seg", "refer_seg", "vqa", "reason_seg")


class QASourceError(BuildError):
    """One item of a source cannot be turned into QA records (the build skips it with --keep-going)."""


@dataclass
class Target:
    """One thing to ask about. `kind`: class (semantic), part, object (part datasets' whole objects), refer,
    short / long (ReasonSeg texts). `mask_key` identifies the mask, so targets sharing a mask encode it once."""

    name: str
    kind: str
    mask_key: object
    obj_part: tuple[str, str] | None = None
    # A part annotation without a segmentation: `build qa --mode exhaustive` leaves it out, the lisa sampler redraws
    # the whole sample when it picks one (the reference's `annToMask` raises on it and its loader starts over).
    empty: bool = False


@dataclass
class Item:
    """One image of a source (or one LLaVA conversation) with its targets."""

    key: str
    image: str                      # path relative to the source's image root, '/'-separated
    height: int = 0
    width: int = 0
    targets: list[Target] = field(default_factory=list)
    mask_of: Callable[[object], np.ndarray] | None = None   # mask_key -> H x W 0/1 array
    ignore: np.ndarray | None = None                        # H x W bool, or None when nothing is ignored
    explanation: str | None = None                          # ReasonSeg explanatory `outputs`
    conversation: list[dict] | None = None                  # VQA turns, already normalised
    _rles: dict = field(default_factory=dict, repr=False)

    def mask(self, mask_key: object) -> np.ndarray:
        """A target's H x W mask, decoded once per item whatever the number of turns asking it."""
        key = ("array", mask_key)
        if key not in self._rles:
            self._rles[key] = self.mask_of(mask_key)
        return self._rles[key]

    def rle(self, mask_key: object) -> dict:
        """The COCO RLE of a target's mask (0/1: any non-zero pixel, so a summed refer mask is clipped)."""
        key = ("mask", mask_key)
        if key not in self._rles:
            self._rles[key] = encode_rle(self.mask(mask_key))
        return self._rles[key]

    def ignore_rle(self) -> dict | None:
        if self.ignore is None:
            return None
        if "ignore" not in self._rles:
            self._rles["ignore"] = encode_rle(self.ignore) if self.ignore.any() else None
        return self._rles["ignore"]


@dataclass
class Source:
    """An opened source: name (as in records), group (for `lisa` mixing), roots, and the reader's two verbs."""

    name: str
    group: str
    root: Path
    image_root: Path
    keys: Callable[[], list[str]]
    load: Callable[[str], Item]
    details: dict = field(default_factory=dict)   # what the build log records about the source (files, counts)


def relative_image(image_root: Path, path: Path, key: str, source: str) -> str:
    """The image path relative to its root; a missing image is an item error, named precisely."""
    if not path.is_file():
        raise QASourceError("image file not found", path=str(path), sample_id=f"{source}/{key}",
                            hint="check the image folder (--images NAME=DIR overrides it)")
    return path.relative_to(image_root).as_posix()
