"""The data model: what a ReasonSeg release holds, in frozen dataclasses.

A sample is one image with its instructions and polygons; a query is (sample id, text index). These types are
shared by every stage, so they carry only plain values (no arrays, no open files).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
EXPECTED_COUNTS = {"train": 239, "val": 200, "test": 779}
TARGET, IGNORE, BACKGROUND = 1, 255, 0
# The Hugging Face Hub calls the validation split "validation"; the release folder is `val/`. Both names are
# accepted wherever a split is named, and `canonical_split` is the one place that maps them.
HUB_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def canonical_split(split: str) -> str:
    """The release's name of a split (or joined splits): `validation` -> `val`, `train_validation` -> `train_val`."""
    folder = {hub: name for name, hub in HUB_SPLIT_NAMES.items()}
    return "_".join(folder.get(part, part) for part in split.split("_"))


@dataclass(frozen=True)
class Shape:
    """One LabelMe-like polygon. `points` are float pixel coordinates, as stored."""

    label: str
    points: tuple[tuple[float, float], ...]

    @property
    def is_flag(self) -> bool:
        # The reference skips "deprecated" shapes by exact (case-insensitive) match only.
        return self.label.lower() == "flag"

    @property
    def is_ignore(self) -> bool:
        # A substring test, as in the reference: "ignore_1", "Ignore region" all count.
        return "ignore" in self.label.lower()


@dataclass(frozen=True)
class Sample:
    """One image of a split with its annotation JSON."""

    id: str
    split: str
    image_path: Path
    json_path: Path
    texts: tuple[str, ...]
    is_sentence: bool
    shapes: tuple[Shape, ...]
    height: int
    width: int
    encoding: str = "utf-8"
    source: str | None = None
    extra_keys: tuple[str, ...] = field(default=())

    def queries(self, protocol: str = "lisa") -> list[Query]:
        """The scored queries of this sample: text 0 only under `lisa`, every text under `all-texts`."""
        texts = self.texts[:1] if protocol == "lisa" else self.texts
        if not texts:
            # A sample without text is still one query under lisa: the reference scores the image's mask.
            return [Query(self.id, 0, "", self.is_sentence)]
        return [Query(self.id, k, text, self.is_sentence) for k, text in enumerate(texts)]


@dataclass(frozen=True)
class Query:
    id: str
    text_index: int
    text: str
    is_sentence: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.text_index)


@dataclass(frozen=True)
class Prediction:
    """A predicted binary mask for one query, kept as COCO compressed RLE (`{"size": [h, w], "counts": str}`)."""

    id: str
    text_index: int
    rle: dict

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.text_index)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.rle["size"]
        return int(h), int(w)
