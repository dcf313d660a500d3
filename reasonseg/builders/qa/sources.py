"""The source registry: a name on the command line -> the reader module that opens it, and its group."""
from __future__ import annotations

import importlib
from pathlib import Path

from .items import QASourceError, Source

# name -> (module, group, keyword arguments of its open_source)
READERS: dict[str, tuple[str, str, dict]] = {
    "ade20k": ("ade20k", "sem_seg", {}),
    "cocostuff": ("cocostuff", "sem_seg", {}),
    "pascal_part": ("parts", "sem_seg", {"name": "pascal_part"}),
    "paco_lvis": ("parts", "sem_seg", {"name": "paco_lvis"}),
    "mapillary": ("mapillary", "sem_seg", {}),
    "refclef": ("refer", "refer_seg", {"name": "refclef"}),
    "refcoco": ("refer", "refer_seg", {"name": "refcoco"}),
    "refcoco+": ("refer", "refer_seg", {"name": "refcoco+"}),
    "refcocog": ("refer", "refer_seg", {"name": "refcocog"}),
    "llava_instruct": ("llava", "vqa", {}),
    "reason_seg": ("reason_seg", "reason_seg", {}),
}
# `refer_seg=DIR` opens every refer dataset present under the refer_seg root.
REFER_ALIAS = "refer_seg"
REFER_NAMES = ("refclef", "refcoco", "refcoco+", "refcocog")


def expand_specs(specs: dict[str, Path]) -> dict[str, Path]:
    """Names checked, the `refer_seg` alias expanded to the refer datasets found under its root."""
    out: dict[str, Path] = {}
    for name, root in specs.items():
        if name == REFER_ALIAS:
            found = [n for n in REFER_NAMES if (Path(root) / n).is_dir()]
            if not found:
                raise QASourceError(f"no {', '.join(REFER_NAMES)} folder found", path=str(root),
                                    hint="pass the refer_seg folder of the reference tree")
            out.update({n: Path(root) for n in found})
        elif name in READERS:
            out[name] = Path(root)
        else:
            raise QASourceError(f"unknown source {name!r}; choose from {', '.join([*READERS, REFER_ALIAS])}")
    return out


def open_sources(specs: dict[str, Path], images: dict[str, Path] | None = None,
                 refer_splits: tuple[str, ...] = ("train",), refer_overlap: str = "sum",
                 reasonseg_split: str = "train") -> list[Source]:
    """Open every source (reading its index files), in a fixed order: by group, then by name.

    `refer_overlap`: how overlapping polygon parts of a refer annotation combine (`sum`: the reference; `clip`: 0/1).
    `reasonseg_split`: the ReasonSeg split(s) read, `train` or `train_val` (what the released v1 models saw)."""
    from .cocojson import OVERLAPS

    if refer_overlap not in OVERLAPS:
        raise QASourceError(f"unknown refer overlap {refer_overlap!r}; choose {' or '.join(OVERLAPS)}",
                            field="refer_overlap")
    images = images or {}
    specs = expand_specs(specs)
    unknown = set(images) - set(specs)
    if unknown:
        raise QASourceError(f"--images names source(s) not given with --source: {', '.join(sorted(unknown))}")
    order = {g: k for k, g in enumerate(("sem_seg", "refer_seg", "vqa", "reason_seg"))}
    opened = []
    for name in sorted(specs, key=lambda n: (order[READERS[n][1]], n)):
        module, _, kwargs = READERS[name]
        root = specs[name]
        if not root.exists():
            raise QASourceError(f"source folder for {name} not found", path=str(root))
        reader = importlib.import_module(f"{__package__}.{module}")
        extra = ({"splits": tuple(refer_splits), "overlap": refer_overlap} if READERS[name][1] == "refer_seg"
                 else {"split": reasonseg_split} if name == "reason_seg" else {})
        image_root = Path(images[name]) if name in images else None
        opened.append(reader.open_source(root, image_root, **kwargs, **extra))
    return opened
