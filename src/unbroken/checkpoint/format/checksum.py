"""CRC32C checksums (hardware-accelerated, computed in C with the GIL released).

CRC32C is what object stores (S3, GCS) check natively, so one checksum serves local and
remote storage. Values are written as 8 lowercase hex digits.
"""

from __future__ import annotations

import os
from pathlib import Path

import crc32c as _crc32c

CHUNK = 8 << 20


def update(crc: int, data) -> int:
    """Extend ``crc`` with ``data`` (bytes-like)."""
    return _crc32c.crc32c(data, crc)


def to_hex(crc: int) -> str:
    return f"{crc & 0xFFFFFFFF:08x}"


def of_file(path: Path | str, size_hint: int | None = None) -> tuple[int, str]:
    """Return ``(size, crc32c hex)`` of a file, read in large chunks."""
    crc = 0
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        while True:
            n = os.readv(fd, [view])
            if n == 0:
                break
            crc = update(crc, view[:n])
            size += n
    finally:
        os.close(fd)
    return size, to_hex(crc)
