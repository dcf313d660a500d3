"""ScanNet v2 2D sources in their published formats (docs/formats.md §2).

Default layout under ROOT (each piece overridable)::

    scannetv2-labels.combined.tsv
    scans/<scene>/color/<i>.jpg                      (or exported on the fly from scans/<scene>/<scene>.sens)
    scans/<scene>/<scene>_2d-label-filt.zip          label-filt/<i>.png, uint16 ScanNet ids   (or label-filt/)
    scans/<scene>/<scene>_2d-instance-filt.zip       instance-filt/<i>.png, uint8 instance ids (or instance-filt/)

Gotchas kept: label PNGs are 16-bit and read unchanged (a default `cv2.imread` turns 1163 into 4); TSV `id`s
are not unique (`raw_category` is), so an id maps to the first category listed; frame names are unpadded
integers; empty TSV cells are common.
"""
from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BuildError

LABEL_TSV = "scannetv2-labels.combined.tsv"


@dataclass(frozen=True)
class ScanNetLabels:
    """The TSV's id → category mapping (first row wins) and raw_category → id (unique)."""

    names: dict[int, str]
    raw_to_id: dict[str, int]

    def name(self, label_id: int) -> str:
        return self.names.get(int(label_id), f"label {label_id}")


def read_label_tsv(path: Path) -> ScanNetLabels:
    if not path.is_file():
        raise BuildError("ScanNet label TSV not found", path=str(path),
                         hint=f"expected {LABEL_TSV} in the ScanNet root, or pass --scannet-labels")
    names: dict[int, str] = {}
    raw_to_id: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None) or []
        index = {name.strip(): k for k, name in enumerate(header)}
        if "id" not in index or "raw_category" not in index:
            raise BuildError("label TSV lacks the 'id' or 'raw_category' column", path=str(path))
        name_col = index.get("category", index["raw_category"])
        for line_no, row in enumerate(reader, start=2):
            if not row or not row[index["id"]].strip():
                continue
            try:
                label_id = int(row[index["id"]])
            except ValueError:
                raise BuildError(f"line {line_no}: id {row[index['id']]!r} is not an integer", path=str(path)) from None
            name = (row[name_col] if name_col < len(row) else "") or row[index["raw_category"]]
            names.setdefault(label_id, name)
            raw_to_id[row[index["raw_category"]]] = label_id
    return ScanNetLabels(names, raw_to_id)


@dataclass
class ScanNetLayout:
    root: Path
    labels_tsv: str = LABEL_TSV
    scans: str = "scans"

    def path(self, template: str) -> Path:
        p = Path(template)
        return p if p.is_absolute() else self.root / p

    def scene_dir(self, scene: str) -> Path:
        folder = self.path(self.scans) / scene
        if not folder.is_dir():
            raise BuildError(f"scene {scene!r} not found", path=str(folder), field="scene")
        return folder


def _png_location(scene_dir: Path, scene: str, kind: str, frame: int) -> tuple[str, str]:
    """Where `<kind>/<frame>.png` is: an extracted folder or the scene's `_2d-<kind>.zip`."""
    folder = scene_dir / kind / f"{frame}.png"
    if folder.is_file():
        return "file", str(folder)
    archive = scene_dir / f"{scene}_2d-{kind}.zip"
    if archive.is_file():
        try:
            with zipfile.ZipFile(archive) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise BuildError(f"not a readable zip ({exc})", path=str(archive),
                             hint="the download is probably truncated: fetch it again") from None
        member = f"{kind}/{frame}.png"
        if member not in names:
            raise BuildError(f"frame {frame} has no {member} in the zip", path=str(archive), field="frame")
        return "zip", f"{archive}::{member}"
    raise BuildError(f"no {kind} image for frame {frame}", path=str(scene_dir), field="frame",
                     hint=f"expected {scene}_2d-{kind}.zip or {kind}/{frame}.png")


def frame_locations(layout: ScanNetLayout, scene: str, frame: int,
                    kinds: tuple[str, ...] = ("label", "instance")) -> dict[str, tuple[str, str]]:
    """Where the color image and the label / instance PNGs (those in `kinds`) of one frame are."""
    scene_dir = layout.scene_dir(scene)
    color = scene_dir / "color" / f"{frame}.jpg"
    if color.is_file():
        color_loc = ("file", str(color))
    elif (scene_dir / f"{scene}.sens").is_file():
        color_loc = ("sens", f"{scene_dir / f'{scene}.sens'}::{frame}")
    else:
        raise BuildError(f"frame {frame} has no color image", path=str(color), field="frame",
                         hint="export it with the ScanNet reader, or keep <scene>.sens beside the scene")
    return {"color": color_loc, **{kind: _png_location(scene_dir, scene, f"{kind}-filt", frame) for kind in kinds}}


def read_color(location: tuple[str, str]) -> bytes:
    """JPEG bytes of a color frame (from the exported file, or straight out of the .sens stream)."""
    kind, where = location
    if kind == "file":
        return Path(where).read_bytes()
    from .sens import SensReader

    path, frame = where.rsplit("::", 1)
    with SensReader(path) as reader:
        return reader.frame(int(frame)).color_jpeg(reader.header)


def read_label_png(location: tuple[str, str], zips=None) -> np.ndarray:
    """A label or instance PNG, values unchanged (16-bit stays 16-bit); `zips`: an openimages.ZipCache."""
    import cv2

    from .openimages import read_location_bytes

    data = read_location_bytes(location, zips)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2:
        raise BuildError("label image does not decode as a single-channel PNG", path=location[1])
    return image
