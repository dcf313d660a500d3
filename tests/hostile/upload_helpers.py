"""Helpers of the upload / server hostile tests: crafted files (PNG bombs, huge JSON), the server's peak memory."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def zero_png(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A valid PNG of the given header whose pixels are all 0: an 8192x8192 16-bit RGBA one is about 0.5 MB and
    decodes to 512 MiB. Built in a fraction of a second: after a full flush, deflate restarts from an empty
    window, so every block of identical rows compresses to identical bytes, compressed once and repeated."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\0" + bytes((width * channels * bit_depth + 7) // 8)     # filter byte 0, then the row's bytes
    per_block = max(1, (1 << 20) // len(row))
    block = row * per_block
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packer.compress(block)
    packer.flush(zlib.Z_FULL_FLUSH)
    repeated = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(height, per_block)
    checksum = 1
    for _ in range(blocks):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(row * rest, checksum)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = repeated * blocks + tail.compress(row * rest) + tail.flush()
    idat = b"\x78\xda" + deflated + struct.pack(">I", checksum & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def header_only_png(width: int, height: int, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A PNG whose header claims `width` x `height` and whose data is cut short (a lying header)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (_PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _chunk(b"IEND", b""))


def predictions_doc(entries: list, split: str = "val") -> bytes:
    return json.dumps({"format": "reasonseg-predictions", "version": 1, "split": split, "method": "hostile",
                       "predictions": entries}).encode()


def many_predictions(n: int, sample_id: str = "not-an-id") -> bytes:
    """`n` predictions (53 bytes each) of one small RLE: 10^6 of them are the 53 MB upload of the review."""
    entry = json.dumps({"id": sample_id, "mask": {"size": [4, 4], "counts": "0`0"}}, separators=(",", ":"))
    return (b'{"format": "reasonseg-predictions", "version": 1, "split": "val", "predictions": ['
            + ",".join([entry] * n).encode() + b"]}")


def nested_json(depth: int, key: str = "predictions") -> bytes:
    """`depth` nested arrays inside the predictions list, or as the value of another top-level `key`."""
    deep = b"[" * depth + b"]" * depth
    if key == "predictions":
        return b'{"format": "reasonseg-predictions", "version": 1, "predictions": [' + deep + b"]}"
    return b'{"%s": %s, "format": "reasonseg-predictions", "version": 1, "predictions": []}' % (key.encode(), deep)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False
