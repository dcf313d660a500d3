"""Helpers of the upload / server hostile tests: crafted files (PNG bombs, huge JSON), the server's peak memory."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from leaderboard.lb_helpers import cli

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


def team(db: str, name: str) -> str:
    """A new team on the leaderboard database `db`, through the CLI; its token."""
    result = cli("leaderboard", "add-team", name, "--db", db)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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


# ------------------------------------------------------------------------- shapes that walk around pre-scans

def zero_run_rle(rle: dict, zeros: int) -> dict:
    """`rle` (compressed counts) with `zeros` '0' characters in front: zero-length runs, an even number of them, so
    the mask is unchanged and the file valid. No comma, no brace: nothing a byte count looks at."""
    assert zeros % 2 == 0 and isinstance(rle["counts"], str)
    return {"size": rle["size"], "counts": "0" * zeros + rle["counts"]}


def nested_lists_value(total_bytes: int, depth: int = 200) -> bytes:
    """`[[[...]]]` chains of `depth`, one comma between chains (one comma per 2 x depth + 1 bytes), `total_bytes`
    long: a JSON value whose parse costs ~60x its size."""
    chain = b"[" * depth + b"]" * depth
    return b"[" + b",".join([chain] * max(1, total_bytes // (len(chain) + 1))) + b"]"


_CENTRAL = struct.Struct("<4s6H3I5H2I")


def zip64_directory(entries: int, classic_entries: int | None, classic_bytes: int | None) -> bytes:
    """A zip that is only a central directory of `entries` records ('a.png', stored, empty), a ZIP64 end record
    and locator that say so, and a classic end record saying `classic_entries` / `classic_bytes` (None: the
    0xFFFF... placeholders that defer to ZIP64). 1,000,000 entries are 49 MiB."""
    record = _CENTRAL.pack(b"PK\x01\x02", 45, 20, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0) + b"a.png"
    directory = record * entries
    end64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(directory), 0)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, len(directory), 1)
    n = 0xFFFF if classic_entries is None else classic_entries
    size = 0xFFFFFFFF if classic_bytes is None else classic_bytes
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, size, 0xFFFFFFFF, 0)
    return directory + end64 + locator + end


def padded_png_zip(pngs: dict[str, bytes], padding: int) -> bytes:
    """A zip of `pngs`, each followed by `padding` zero bytes after its IEND (deflated: ~1/1000 on the wire). Built
    without deflating the padding: after a full flush deflate restarts, so one compressed MiB of zeros repeats."""
    mib = 1 << 20
    assert padding % mib == 0
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packer.compress(bytes(mib))
    packer.flush(zlib.Z_FULL_FLUSH)
    zeros = packer.compress(bytes(mib)) + packer.flush(zlib.Z_FULL_FLUSH)
    ending = zlib.compressobj(9, zlib.DEFLATED, -15)
    final = ending.compress(b"") + ending.flush()
    padding_crc = bytes(padding)
    local, central, offset = [], [], 0
    for name, png in pngs.items():
        head = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = head.compress(png) + head.flush(zlib.Z_FULL_FLUSH) + zeros * (padding // mib) + final
        crc, size, encoded = zlib.crc32(padding_crc, zlib.crc32(png)), len(png) + padding, name.encode()
        header = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(deflated), size,
                             len(encoded), 0) + encoded
        central.append(_CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(deflated), size, len(encoded), 0,
                                     0, 0, 0, 0, offset) + encoded)
        local.append(header + deflated)
        offset += len(header) + len(deflated)
    directory = b"".join(central)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(pngs), len(pngs), len(directory), offset, 0)
    return b"".join(local) + directory + end
