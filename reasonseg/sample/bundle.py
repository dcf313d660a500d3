"""Everything `reasonseg sample` writes: the synthetic sources of every builder and a ReasonSeg-format release."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..outputs import staged_output_dir
from . import openimages, scannet
from .qa_sources import GOTCHA_ROOT, write_qa_sources
from .release import write_sample_release

SAMPLE_NAME = "reasonseg-sample"


@dataclass(frozen=True)
class SampleBundle:
    release: Path           # ReasonSeg layout with manifest.json
    openimages: Path        # OpenImages-format source root
    scannet: Path           # ScanNet-format source root
    instructions: Path      # the instruction manifest (JSONL) for `build reasonseg`
    qa_sources: dict        # source name -> root, for `build qa --source NAME=ROOT`


def write_build_sources(out: str | os.PathLike, seed: int = 0,
                        scannet_size: tuple[int, int] | None = None) -> tuple[Path, Path, Path]:
    """The synthetic OpenImages and ScanNet sources and their instruction manifest under `out`:
    (openimages root, scannet root, manifest path)."""
    out = Path(out)
    oi_root = openimages.write_openimages_source(out / "openimages", seed=seed)
    sn_root = scannet.write_scannet_source(out / "scannet", seed=seed,
                                           **({"size": scannet_size} if scannet_size else {}))
    manifest = openimages.write_manifest_jsonl(out / "instructions.jsonl",
                                               openimages.manifest_lines(oi_root) + scannet.manifest_lines())
    return oi_root, sn_root, manifest


def write_sample_release_with_manifest(out: str | os.PathLike, seed: int = 0) -> Path:
    """The synthetic release plus its manifest.json, named `reasonseg-sample`."""
    from ..dataset import write_manifest

    release = write_sample_release(out, seed=seed)
    write_manifest(release, name=SAMPLE_NAME, version="1", sources={"synthetic": f"reasonseg.sample, seed {seed}"})
    return release


SAMPLE_OUTPUTS = ("release", "sources", "qa-sources")


def write_sample(out: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> SampleBundle:
    """Write `out/release`, `out/sources` (OpenImages, ScanNet, instructions.jsonl) and `out/qa-sources`.

    A non-empty `out` needs `overwrite`, which replaces those three folders only."""
    out = Path(out)
    with staged_output_dir(out, overwrite, SAMPLE_OUTPUTS, error=DatasetError) as tmp:
        release = write_sample_release_with_manifest(tmp / "release", seed=seed)
        oi_root, sn_root, instructions = write_build_sources(tmp / "sources", seed=seed)
        qa = write_qa_sources(tmp / "qa-sources" / GOTCHA_ROOT, seed=seed)

    def moved(path: str | os.PathLike) -> Path:  # where a path under the temporary folder ends up
        return out / Path(path).relative_to(tmp)

    return SampleBundle(moved(release), moved(oi_root), moved(sn_root), moved(instructions),
                        {k: moved(v) for k, v in qa.items()})
