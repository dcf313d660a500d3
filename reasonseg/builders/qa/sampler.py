"""The reference's training sampler: every sample a fresh draw from the sources, as its `HybridDataset` draws.

One draw: a group with the rates 9,3,3,1 (sem_seg, refer_seg, vqa, reason_seg; renormalised over the groups
present), then, until a sample comes out, a dataset uniformly within the group, an item uniformly within the
dataset and up to 3 distinct targets of it, each asked with a random template (part names phrased at random,
ReasonSeg's explanatory choice made per draw). The reference's redraw rules: an item with nothing to ask (an
all-ignore label map, an image without annotations) or a picked part annotation whose segmentation pycocotools
cannot decode (an empty one) starts the draw over *within the group*, re-picking the dataset.

Draw `k` depends only on (seed, k): `draw(k)` is the same whoever asks and whenever, so a resumed run continues the
stream by asking for the next index, the ranks of a run take disjoint indices, and `build qa --mode lisa --samples
N --seed S` writes draws 0..N-1 of the stream a training run with seed S consumes (same sources and options).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import BuildError
from .items import GROUPS, Item, QASourceError, Source, Target
from .records import assemble, make_turns

LISA_RATES = (9.0, 3.0, 3.0, 1.0)
NUM_PER_SAMPLE = 3
MAX_REDRAWS = 1000
# The reference decodes these with COCO's annToMask inside a try: a failure starts the sample over.
REDRAW_ON_DECODE_ERROR = ("paco_lvis", "pascal_part")


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the seed and on what it is for (stable across processes and runs)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass(frozen=True)
class SamplerOptions:
    rates: tuple[float, ...] = LISA_RATES   # per group, in GROUPS order
    per_sample: int = NUM_PER_SAMPLE        # targets (questions) per sample at most
    explanatory: float = 0.1                # ReasonSeg text-only explanation rate; -1 disables explanations
    keep_going: bool = False                # a bad item is skipped (and the draw starts over) instead of stopping

    def check(self) -> None:
        rates = tuple(self.rates)
        if len(rates) != len(GROUPS) or any(not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0
                                            for r in rates) or not sum(rates):
            raise BuildError(f"rates need {len(GROUPS)} finite non-negative numbers, not all 0 "
                             f"({', '.join(GROUPS)}), got {list(rates)}", field="rates")
        if self.per_sample < 1:
            raise BuildError("per_sample must be at least 1", field="per_sample")
        if not (self.explanatory == -1 or 0 <= self.explanatory <= 1):
            raise BuildError(f"explanatory must be in [0, 1] or -1, got {self.explanatory}", field="explanatory")


@dataclass
class Draw:
    """One sample: the item, the targets asked, the record fields and the mask key of each [SEG]."""

    index: int
    source: Source
    item: Item
    targets: list[Target]
    fields: dict
    mask_keys: list
    events: list = field(default_factory=list)   # (kind, source, item key, reason): "skip" | "redraw"

    @property
    def id(self) -> str:
        return f"{self.source.name}/{self.item.key}/s{self.index}"

    def record(self) -> dict:
        """The `qa.jsonl` line (masks as 0/1 RLE)."""
        return assemble(self.id, self.source, self.item, self.fields, self.mask_keys)

    def masks(self) -> np.ndarray:
        """k x H x W uint8, one per [SEG] in order, as the reference's target (a summed refer mask keeps its 2s)."""
        if not self.mask_keys:
            return np.zeros((0, self.item.height, self.item.width), np.uint8)
        return np.stack([np.ascontiguousarray(self.item.mask(k), dtype=np.uint8) for k in self.mask_keys])


class LisaSampler:
    """Draws from opened sources (`open_sources`), the reference's way; `draw(k)` is a pure function of (seed, k)."""

    def __init__(self, sources: list[Source], options: SamplerOptions = SamplerOptions(), seed: int = 0):
        options.check()
        if not sources:
            raise BuildError("no source given", hint="pass at least one source")
        self.options, self.seed = options, seed
        self.keys = {s.name: list(s.keys()) for s in sources}
        empty = [name for name, keys in self.keys.items() if not keys]
        if empty:
            raise BuildError(f"source(s) without items: {', '.join(empty)}", hint="check the source folders")
        self.by_group: dict[str, list[Source]] = {}
        for s in sources:
            self.by_group.setdefault(s.group, []).append(s)
        self.groups = [g for g in GROUPS if self.by_group.get(g) and options.rates[GROUPS.index(g)] > 0]
        if not self.groups:
            raise BuildError("every group with a source has rate 0", field="rates",
                             hint=f"sources: {', '.join(s.name for s in sources)}")
        rates = np.array([options.rates[GROUPS.index(g)] for g in self.groups], float)
        self.probabilities = rates / rates.sum()

    def draw(self, index: int) -> Draw:
        rng = seeded_rng(self.seed, "lisa", index)
        group = self.groups[int(rng.choice(len(self.groups), p=self.probabilities))]
        candidates = self.by_group[group]
        events: list = []
        for _ in range(MAX_REDRAWS):
            source = candidates[int(rng.integers(len(candidates)))]
            keys = self.keys[source.name]
            key = keys[int(rng.integers(len(keys)))]
            try:
                item = source.load(key)
                targets = self._pick(source, item, rng)
            except QASourceError as exc:
                if not self.options.keep_going:
                    raise
                events.append(("skip", source.name, key, exc.render()))
                continue
            if isinstance(targets, str):
                events.append(("redraw", source.name, key, targets))
                continue
            fields, mask_keys = make_turns(source, item, targets, rng, self.options.explanatory)
            return Draw(index, source, item, targets, fields, mask_keys, events)
        raise BuildError(f"no usable sample after {MAX_REDRAWS} draws from group {group}",
                         sample_id=", ".join(s.name for s in candidates),
                         hint="the sources have nothing to ask (all-ignore label maps?) or every item is bad")

    def _pick(self, source: Source, item: Item, rng: np.random.Generator) -> list[Target] | str:
        """Up to `per_sample` distinct targets with their masks decoded, or why the draw starts over."""
        if item.conversation is not None:
            return []
        if not item.targets:
            return "nothing to ask"
        n, k = len(item.targets), self.options.per_sample
        picked = rng.choice(n, size=k, replace=False) if n >= k else range(n)
        targets = [item.targets[int(i)] for i in picked]
        for target in targets:
            if target.empty:
                return "empty segmentation"
            try:
                item.mask(target.mask_key)
            except QASourceError as exc:
                if source.name not in REDRAW_ON_DECODE_ERROR:
                    raise
                return f"segmentation does not decode ({exc.message})"
        return targets
