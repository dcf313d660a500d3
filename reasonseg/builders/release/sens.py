"""ScanNet `.sens` RGB-D streams: read the header and frames, export color, depth, poses and intrinsics.

Written from the documented layout (docs/formats.md §2.2), little-endian::

    uint32 version (4) · uint64 n + sensor name · float32[16] x4 (intrinsic/extrinsic color, depth)
    int32 color compression (-1 unknown, 0 raw, 1 png, 2 jpeg) · int32 depth compression (0 raw, 1 zlib, 2 occi)
    uint32 color width, height, depth width, height · float32 depth shift · uint64 frame count
    per frame: float32[16] camera-to-world · uint64 color ts, depth ts, color bytes, depth bytes · color · depth

Frames are read one at a time (never the whole stream), and every size is checked against the file's length
first, so a corrupted header gives an error naming the field instead of a giant allocation.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BuildError

VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
_MAX_NAME = 4096
_MAX_SIDE = 1 << 14
_FRAME_HEADER = struct.Struct("<16f4Q")


@dataclass(frozen=True)
class SensHeader:
    version: int
    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_size: tuple[int, int]  # (width, height)
    depth_size: tuple[int, int]
    depth_shift: float
    num_frames: int
    data_offset: int


@dataclass(frozen=True)
class SensFrame:
    index: int
    camera_to_world: np.ndarray  # 4x4 float32; invalid poses hold -inf
    timestamp_color: int
    timestamp_depth: int
    color: bytes  # compressed as the header says (JPEG in ScanNet)
    depth: bytes

    def depth_array(self, header: SensHeader) -> np.ndarray:
        """Depth as uint16 H x W in 1/depth_shift metres (millimetres in ScanNet)."""
        w, h = header.depth_size
        if header.depth_compression == "zlib_ushort":
            raw = zlib.decompress(self.depth)
        elif header.depth_compression == "raw_ushort":
            raw = self.depth
        else:
            raise BuildError(f"depth compression {header.depth_compression!r} is not supported",
                             field="depth_compression_type")
        if len(raw) != w * h * 2:
            raise BuildError(f"frame {self.index}: depth holds {len(raw)} bytes, expected {w * h * 2}")
        return np.frombuffer(raw, "<u2").reshape(h, w)

    def color_jpeg(self, header: SensHeader) -> bytes:
        """The color frame as JPEG bytes: the stored bytes when already JPEG (no re-encoding)."""
        import cv2

        if header.color_compression == "jpeg":
            return self.color
        w, h = header.color_size
        if header.color_compression == "raw":
            image = np.frombuffer(self.color, np.uint8).reshape(h, w, 3)[:, :, ::-1]
        else:
            image = cv2.imdecode(np.frombuffer(self.color, np.uint8), cv2.IMREAD_COLOR)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise BuildError(f"frame {self.index}: color does not encode as JPEG")
        return data.tobytes()


class SensReader:
    """Sequential access to a .sens file. Use as a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as exc:
            raise BuildError(f"cannot open .sens file: {exc.strerror}", path=str(self.path)) from None
        self._size = self.path.stat().st_size
        try:
            self.header = self._read_header()
        except BaseException:
            self._fh.close()
            raise

    def __enter__(self) -> SensReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def _take(self, n: int, what: str) -> bytes:
        data = self._fh.read(n)
        if len(data) != n:
            raise BuildError(f".sens file ends inside {what} (truncated or corrupted)", path=str(self.path),
                             field=what)
        return data

    def _bad(self, what: str, message: str) -> BuildError:
        return BuildError(f"corrupted .sens header: {message}", path=str(self.path), field=what,
                          hint="the file is not a ScanNet .sens stream, or it was damaged: download it again")

    def _read_header(self) -> SensHeader:
        (version,) = struct.unpack("<I", self._take(4, "version"))
        if version != VERSION:
            raise self._bad("version", f"version {version}, expected {VERSION}")
        (name_len,) = struct.unpack("<Q", self._take(8, "sensor_name"))
        if name_len > _MAX_NAME:
            raise self._bad("sensor_name", f"sensor name length {name_len}")
        name = self._take(name_len, "sensor_name").decode("utf-8", "replace")
        mats = np.frombuffer(self._take(4 * 64, "calibration"), "<f4").reshape(4, 4, 4).copy()
        color_c, depth_c = struct.unpack("<ii", self._take(8, "compression_type"))
        if color_c not in COLOR_COMPRESSION:
            raise self._bad("color_compression_type", f"unknown color compression {color_c}")
        if depth_c not in DEPTH_COMPRESSION:
            raise self._bad("depth_compression_type", f"unknown depth compression {depth_c}")
        cw, ch, dw, dh = struct.unpack("<4I", self._take(16, "frame_sizes"))
        if not all(0 < v <= _MAX_SIDE for v in (cw, ch, dw, dh)):
            raise self._bad("frame_sizes", f"color {cw}x{ch}, depth {dw}x{dh}")
        (shift,) = struct.unpack("<f", self._take(4, "depth_shift"))
        (num_frames,) = struct.unpack("<Q", self._take(8, "num_frames"))
        offset = self._fh.tell()
        if num_frames * _FRAME_HEADER.size > self._size - offset:
            raise self._bad("num_frames", f"{num_frames} frames cannot fit in {self._size} bytes")
        return SensHeader(version, name, mats[0], mats[1], mats[2], mats[3], COLOR_COMPRESSION[color_c],
                          DEPTH_COMPRESSION[depth_c], (cw, ch), (dw, dh), float(shift), int(num_frames), offset)

    def frames(self, wanted: Iterable[int] | None = None) -> Iterator[SensFrame]:
        """Frames in stream order; only those in `wanted` are read into memory (others are skipped over)."""
        wanted_set = None if wanted is None else set(wanted)
        if wanted_set is not None:
            beyond = [i for i in wanted_set if not 0 <= i < self.header.num_frames]
            if beyond:
                raise BuildError(f"frame {min(beyond)} is not in the stream ({self.header.num_frames} frames)",
                                 path=str(self.path), field="frame")
        last = max(wanted_set) if wanted_set else self.header.num_frames - 1
        self._fh.seek(self.header.data_offset)
        for index in range(min(self.header.num_frames, last + 1)):
            values = _FRAME_HEADER.unpack(self._take(_FRAME_HEADER.size, f"frame {index} header"))
            pose = np.array(values[:16], np.float32).reshape(4, 4)
            ts_color, ts_depth, n_color, n_depth = values[16:]
            if n_color + n_depth > self._size - self._fh.tell():
                raise BuildError(f"frame {index} claims {n_color + n_depth} bytes past the end of the file",
                                 path=str(self.path), field=f"frame {index}")
            if wanted_set is not None and index not in wanted_set:
                self._fh.seek(n_color + n_depth, 1)
                continue
            color = self._take(n_color, f"frame {index} color")
            depth = self._take(n_depth, f"frame {index} depth")
            yield SensFrame(index, pose, ts_color, ts_depth, color, depth)

    def frame(self, index: int) -> SensFrame:
        return next(iter(self.frames([index])))


def _savetxt(path: Path, matrix: np.ndarray) -> None:
    np.savetxt(path, matrix, fmt="%.6f")


def export_sens(path: str | Path, out: str | Path, frames: Iterable[int] | None = None, *, color: bool = True,
                depth: bool = True, pose: bool = True, intrinsics: bool = True) -> int:
    """Export like ScanNet's reader: color/<i>.jpg, depth/<i>.png (uint16), pose/<i>.txt, intrinsic/*.txt.

    Returns the number of frames exported.
    """
    import cv2

    out = Path(out)
    count = 0
    with SensReader(path) as reader:
        header = reader.header
        if intrinsics:
            (out / "intrinsic").mkdir(parents=True, exist_ok=True)
            for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
                _savetxt(out / "intrinsic" / f"{name}.txt", getattr(header, name))
        for sub, on in (("color", color), ("depth", depth), ("pose", pose)):
            if on:
                (out / sub).mkdir(parents=True, exist_ok=True)
        for frame in reader.frames(frames):
            if color:
                (out / "color" / f"{frame.index}.jpg").write_bytes(frame.color_jpeg(header))
            if depth:
                ok, png = cv2.imencode(".png", frame.depth_array(header))
                if not ok:
                    raise BuildError(f"frame {frame.index}: depth does not encode as PNG", path=str(path))
                (out / "depth" / f"{frame.index}.png").write_bytes(png.tobytes())
            if pose:
                _savetxt(out / "pose" / f"{frame.index}.txt", frame.camera_to_world)
            count += 1
    return count
