"""A deterministic synthetic ScanNet v2 source in the published formats (docs/formats.md §2), gotchas included.

`write_scannet_source(root, seed=0)` writes::

    root/scannetv2-labels.combined.tsv        17 columns; ids 22 twice (books, book); 1163; empty cells
    root/scans/scene0000_00/
      scene0000_00.txt                          colorWidth = 1296 ... sceneType = Office
      scene0000_00_2d-label-filt.zip            label-filt/{0,100,200}.png: uint16, values up to 1163
      scene0000_00_2d-instance-filt.zip         instance-filt/{0,100,200}.png: uint8
      color/{0,100,200}.jpg (1296x968) · depth/{0,100,200}.png (uint16 640x480, mm) · pose/*.txt (one -inf)
      intrinsic/intrinsic_color.txt
    root/scans/scene0001_00/
      scene0001_00.sens                         3 frames, JPEG color + zlib depth: no exported color/ folder
      label-filt/{0,1,2}.png · instance-filt/{0,1,2}.png   (extracted folders instead of zips)

`write_sens(path, colors, depths, poses)` writes a .sens stream in the documented layout. `manifest_lines()`
gives instruction-manifest lines for the source (instance ids, one `{"label": 1163}` target).
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

TSV_HEADER = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class",
              "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
              "wnsynsetkey", "mpcat40", "mpcat40index"]
TSV_ROWS = [
    ["1", "wall", "wall", "8277", "1", "12", "wall", "wall", "Wall", "", "", "", "", "n04546855", "wall.n.01",
     "wall", "1"],
    ["2", "chair", "chair", "4646", "5", "4", "chair", "chair", "Chair", "chair", "chair", "chair", "03001627",
     "n03001627", "chair.n.01", "chair", "3"],
    ["5", "door", "door", "2058", "8", "12", "door", "door", "Wall", "door", "", "", "", "n03221720", "door.n.01",
     "door", "4"],
    ["7", "table", "table", "1170", "7", "10", "table", "table", "Table", "table", "table", "table", "04379243",
     "n04379243", "table.n.02", "table", "5"],
    ["22", "books", "book", "1678", "23", "2", "book", "books", "Books", "", "", "", "", "n02870526",
     "book.n.11", "objects", "39"],
    ["22", "book", "book", "1074", "23", "2", "book", "books", "Books", "", "", "", "", "n02870526",
     "book.n.11", "objects", "39"],
    ["1163", "object", "object", "1313", "40", "7", "", "otherprop", "Objects", "", "", "", "", "", "",
     "objects", "39"],
]
COLOR_SIZE = (968, 1296)  # (height, width)
DEPTH_SIZE = (480, 640)
# (label id, BGR colour) of the objects placed in each frame; instance ids count from 1 in this order.
OBJECTS = ((2, (40, 60, 200)), (2, (40, 70, 190)), (7, (30, 120, 160)), (22, (200, 80, 40)), (1163, (90, 200, 90)))
SCENES = {"scene0000_00": (0, 100, 200), "scene0001_00": (0, 1, 2)}


def _tsv() -> str:
    return "\n".join("\t".join(row) for row in [TSV_HEADER, *TSV_ROWS]) + "\n"


def _frame(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(color BGR, label uint16, instance uint8) of one frame: a wall with objects in front of it."""
    color = np.empty((height, width, 3), np.uint8)
    color[:] = (170, 175, 180)
    label = np.ones((height, width), np.uint16)  # wall
    instance = np.zeros((height, width), np.uint8)  # walls get no instance
    label[int(0.9 * height):, :] = 0  # an unannotated strip at the bottom
    for k, (label_id, bgr) in enumerate(OBJECTS, start=1):
        x0 = int((k - 1) * width / len(OBJECTS) + rng.uniform(0.01, 0.04) * width)
        w = int(rng.uniform(0.1, 0.14) * width)
        y0 = int(rng.uniform(0.3, 0.5) * height)
        h = int(rng.uniform(0.2, 0.35) * height)
        region = np.zeros((height, width), np.uint8)
        if label_id == 2:  # a chair: seat and back
            cv2.rectangle(region, (x0, y0 + h // 2), (x0 + w, y0 + h // 2 + h // 8), 1, -1)
            cv2.rectangle(region, (x0, y0), (x0 + w // 5, y0 + h), 1, -1)
        else:
            cv2.ellipse(region, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
        mask = region.astype(bool)
        color[mask] = bgr
        label[mask] = label_id
        instance[mask] = k
    return color, label, instance


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _depth(rng: np.random.Generator) -> np.ndarray:
    yy = np.mgrid[0:DEPTH_SIZE[0], 0:DEPTH_SIZE[1]][0]
    return (1500 + 3 * yy + rng.integers(0, 20, DEPTH_SIZE)).astype(np.uint16)  # millimetres


def _pose(frame: int, valid: bool = True) -> np.ndarray:
    if not valid:
        return np.full((4, 4), -np.inf, np.float32)
    pose = np.eye(4, dtype=np.float32)
    pose[:3, 3] = [0.01 * frame, 1.5, 0.2]
    return pose


INTRINSIC_COLOR = np.array([[1170.19, 0, 647.75, 0], [0, 1170.19, 483.75, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                           np.float32)
INTRINSIC_DEPTH = np.array([[577.59, 0, 318.91, 0], [0, 578.73, 242.68, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)


def write_sens(path: str | os.PathLike, colors: list[bytes], depths: list[np.ndarray], poses: list[np.ndarray],
               color_size: tuple[int, int] = COLOR_SIZE, sensor: str = "StructureSensor (calibrated)") -> Path:
    """A version-4 .sens stream: JPEG color, zlib uint16 depth, one camera-to-world pose per frame."""
    path = Path(path)
    out = io.BytesIO()
    name = sensor.encode()
    out.write(struct.pack("<IQ", 4, len(name)) + name)
    for matrix in (INTRINSIC_COLOR, np.eye(4), INTRINSIC_DEPTH, np.eye(4)):
        out.write(np.asarray(matrix, "<f4").tobytes())
    out.write(struct.pack("<ii", 2, 1))  # jpeg color, zlib_ushort depth
    out.write(struct.pack("<4I", color_size[1], color_size[0], DEPTH_SIZE[1], DEPTH_SIZE[0]))
    out.write(struct.pack("<fQ", 1000.0, len(colors)))
    for k, (color, depth, pose) in enumerate(zip(colors, depths, poses, strict=True)):
        packed = zlib.compress(np.asarray(depth, "<u2").tobytes())
        out.write(np.asarray(pose, "<f4").tobytes())
        out.write(struct.pack("<4Q", 1000 * k, 1000 * k + 5, len(color), len(packed)))
        out.write(color + packed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return path


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name in sorted(members):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2018, 1, 1, 0, 0, 0)), members[name])


def write_scannet_source(root: str | os.PathLike, seed: int = 0, size: tuple[int, int] = COLOR_SIZE) -> Path:
    """Write the synthetic ScanNet source under `root` and return it. `size` = (height, width) of color frames."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "scannetv2-labels.combined.tsv").write_text(_tsv(), encoding="utf-8")
    height, width = size
    for scene_no, (scene, frames) in enumerate(SCENES.items()):
        folder = root / "scans" / scene
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{scene}.txt").write_text(
            f"axisAlignment = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\ncolorHeight = {height}\ncolorWidth = {width}\n"
            f"depthHeight = {DEPTH_SIZE[0]}\ndepthWidth = {DEPTH_SIZE[1]}\nfx_color = 1170.19\n"
            f"numColorFrames = {len(frames)}\nsceneType = Office\n", encoding="utf-8")
        colors, depths, poses, labels, instances = [], [], [], {}, {}
        for k, frame in enumerate(frames):
            rng = np.random.default_rng([seed, 8001, scene_no, frame])
            color, label, instance = _frame(rng, height, width)
            colors.append(_jpeg(color))
            depths.append(_depth(rng))
            poses.append(_pose(frame, valid=k != 1))
            labels[f"label-filt/{frame}.png"] = _png(label)
            instances[f"instance-filt/{frame}.png"] = _png(instance)
        if scene_no == 0:
            for sub in ("color", "depth", "pose", "intrinsic"):
                (folder / sub).mkdir(exist_ok=True)
            for frame, color, depth, pose in zip(frames, colors, depths, poses, strict=True):
                (folder / "color" / f"{frame}.jpg").write_bytes(color)
                (folder / "depth" / f"{frame}.png").write_bytes(_png(depth))
                np.savetxt(folder / "pose" / f"{frame}.txt", pose, fmt="%.6f")
            np.savetxt(folder / "intrinsic" / "intrinsic_color.txt", INTRINSIC_COLOR, fmt="%.6f")
            _zip(folder / f"{scene}_2d-label-filt.zip", labels)
            _zip(folder / f"{scene}_2d-instance-filt.zip", instances)
        else:
            write_sens(folder / f"{scene}.sens", colors, depths, poses, color_size=(height, width))
            for members in (labels, instances):
                for name, data in members.items():
                    (folder / name).parent.mkdir(exist_ok=True)
                    (folder / name).write_bytes(data)
    return root


def manifest_lines() -> list[dict]:
    """Instruction-manifest lines for the synthetic ScanNet source."""
    return [
        {"source": "scannet", "scene": "scene0000_00", "frame": 0, "targets": [1], "ignore": [],
         "texts": ["chair"], "is_sentence": False},
        {"source": "scannet", "scene": "scene0000_00", "frame": 100, "targets": [3], "ignore": [],
         "texts": ["Where could I put my laptop down while I work?"], "is_sentence": True,
         "explanation": "A table offers a flat surface at working height."},
        {"source": "scannet", "scene": "scene0000_00", "frame": 200, "targets": [{"label": 1163}], "ignore": [],
         "texts": ["the object"], "is_sentence": False},
        {"source": "scannet", "scene": "scene0001_00", "frame": 1, "targets": [1, 2], "ignore": [],
         "texts": ["Where can two people sit down in this room?"], "is_sentence": True},
        {"source": "scannet", "scene": "scene0001_00", "frame": 2, "targets": [4], "ignore": [5],
         "texts": ["the books"], "is_sentence": False},
    ]
