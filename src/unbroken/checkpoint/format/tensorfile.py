"""Tensor files in the safetensors layout, written and read without the safetensors package.

Layout (https://huggingface.co/docs/safetensors): an unsigned 64-bit little-endian header
length N, then N bytes of UTF-8 JSON (padded with spaces to a multiple of 8), then the raw
tensor bytes. The header maps each tensor name to ``{"dtype", "shape", "data_offsets"}``
(offsets relative to the end of the header) and may carry ``"__metadata__"`` (str -> str).
The data must be covered exactly, without holes or overlaps.

Writers here order tensors by item size, largest first, so every tensor starts at an offset
that is a multiple of its item size: views on the bytes are aligned without a copy.

The reader trusts nothing: any malformed input raises :class:`TensorFileError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Iterable

from ...errors import TensorFileError
from . import checksum

#: safetensors dtype name -> item size in bytes.
ITEM_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
#: Largest header accepted (as the safetensors library: 100 MB).
MAX_HEADER = 100 << 20
#: Most dimensions of a tensor (numpy's limit).
MAX_DIMS = 64
#: Header bytes allowed per expected tensor beyond its escaped name: the JSON of dtype, up to
#: MAX_DIMS 20-digit dimensions, two offsets; plus room for ``__metadata__`` and padding.
_HEADER_PER_ENTRY = 64 + 21 * MAX_DIMS
_HEADER_BASE = 64 << 10
_ALIGN = 8


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are, relative to the start of the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclasses.dataclass(frozen=True)
class Header:
    """A parsed header: entries in file order, the offset where data starts, user metadata."""

    entries: tuple[TensorEntry, ...]
    data_start: int
    metadata: dict[str, str]

    @property
    def by_name(self) -> dict[str, TensorEntry]:
        return {e.name: e for e in self.entries}

    @property
    def file_size(self) -> int:
        return self.data_start + (self.entries[-1].end if self.entries else 0)


def layout(tensors: Iterable[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None = None
           ) -> tuple[bytes, Header]:
    """Plan a file: return the encoded header (length prefix included) and its parsed form.

    ``tensors`` yields ``(name, dtype, shape)``; they are laid out largest item size first.
    """
    items = list(tensors)
    order = sorted(range(len(items)), key=lambda i: -ITEM_SIZES[items[i][1]])
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    entries = []
    offset = 0
    for i in order:
        name, dtype, shape = items[i]
        nbytes = ITEM_SIZES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        entries.append(TensorEntry(name, dtype, tuple(shape), offset, offset + nbytes))
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(len(raw) + 8) % _ALIGN)
    encoded = struct.pack("<Q", len(raw)) + raw
    return encoded, Header(tuple(entries), len(encoded), dict(metadata or {}))


def write(path: str | os.PathLike[str], header_bytes: bytes, header: Header, buffers: dict[str, memoryview]
          ) -> str:
    """Write a tensor file, fsync it, and return its CRC32C (hex).

    ``buffers`` maps each tensor name to a C-contiguous byte view of its data. Large writes and
    the checksum run in C with the GIL released.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        crc = _write_all(fd, memoryview(header_bytes), 0)
        for entry in header.entries:
            view = buffers[entry.name]
            if view.nbytes != entry.nbytes:
                raise ValueError(f"tensor {entry.name!r} has {view.nbytes} bytes, header says {entry.nbytes}")
            crc = _write_all(fd, view, crc)
        os.fsync(fd)
    finally:
        os.close(fd)
    return checksum.to_hex(crc)


def _write_all(fd: int, view: memoryview, crc: int) -> int:
    view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    step = checksum.CHUNK * 4
    for start in range(0, view.nbytes, step):
        chunk = view[start:start + step]
        crc = checksum.update(crc, chunk)
        while chunk:
            chunk = chunk[os.write(fd, chunk):]
    return crc


def max_header_size(names: Iterable[str]) -> int:
    """The largest header a file holding exactly the tensors ``names`` can need (bytes after the prefix)."""
    return min(MAX_HEADER, _HEADER_BASE + sum(_HEADER_PER_ENTRY + 6 * len(n.encode("utf-8", "surrogatepass"))
                                              for n in names))


def header_length(prefix: bytes, file_size: int, limit: int = MAX_HEADER) -> int:
    """The header length N from the first 8 bytes of a file; TensorFileError unless it fits.

    ``limit`` bounds N before a byte of the header is read (see :func:`max_header_size`).
    """
    if len(prefix) < 8 or file_size < 8:
        raise TensorFileError("tensor file is shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > min(limit, MAX_HEADER) or 8 + n > file_size:
        raise TensorFileError(f"tensor file header length {n} does not fit the file ({file_size} bytes)"
                              + (f" or the {limit} bytes its tensors can need" if limit < MAX_HEADER else ""))
    return n


def parse_header(prefix: bytes, file_size: int) -> Header:
    """Parse and validate the header at the start of a tensor file of ``file_size`` bytes.

    ``prefix`` must hold at least the first ``8 + N`` bytes (or the whole file if shorter).
    Raises :class:`TensorFileError` for anything that is not a valid safetensors file.
    """
    n = header_length(prefix, file_size)
    if len(prefix) < 8 + n:
        raise TensorFileError("tensor file header is truncated")
    try:
        raw = json.loads(bytes(prefix[8:8 + n]).decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TensorFileError(f"tensor file header is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TensorFileError("tensor file header is not a JSON object")
    metadata = raw.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TensorFileError("tensor file __metadata__ must map strings to strings")
    entries = sorted((_parse_entry(name, spec) for name, spec in raw.items()), key=lambda e: (e.begin, e.end))
    _check_coverage(entries, file_size - 8 - n)
    return Header(tuple(entries), 8 + n, metadata)


def read_header(f) -> Header:
    """Read and validate the header of an open binary file (positioned anywhere)."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    first = f.read(8)
    n = header_length(first, size)
    return parse_header(first + f.read(n), size)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return out


def _parse_entry(name: str, spec) -> TensorEntry:
    if not isinstance(spec, dict):
        raise TensorFileError(f"tensor {name!r}: header entry is not an object")
    dtype = spec.get("dtype")
    shape = spec.get("shape")
    offsets = spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEM_SIZES:
        raise TensorFileError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise TensorFileError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if len(shape) > MAX_DIMS or math.prod(d for d in shape if d) * ITEM_SIZES[dtype] >= 1 << 62:
        raise TensorFileError(f"tensor {name!r}: shape {shape} is larger than any tensor can be")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise TensorFileError(f"tensor {name!r}: data_offsets must be two non-negative integers")
    begin, end = offsets
    if end - begin != ITEM_SIZES[dtype] * math.prod(shape):
        raise TensorFileError(f"tensor {name!r}: data_offsets do not match dtype and shape")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def _check_coverage(entries: list[TensorEntry], data_size: int) -> None:
    position = 0
    for entry in entries:
        if entry.begin != position:
            raise TensorFileError(f"tensor {entry.name!r}: data has a hole or an overlap at byte {position}")
        position = entry.end
    if position != data_size:
        raise TensorFileError(f"tensor data covers {position} bytes but the file has {data_size}")


def pread_header(fd: int, file_size: int, limit: int = MAX_HEADER) -> tuple[Header, bytes]:
    """Read and validate the header of an open file of ``file_size`` bytes with ``pread`` (the
    descriptor's position is not used); return it and its raw bytes, length prefix included.

    ``limit`` bounds the header length before it is read (see :func:`max_header_size`).
    Raises :class:`TensorFileError` for a malformed or truncated header, OSError for read errors.
    """
    first = _pread_upto(fd, min(8, file_size), 0)
    n = header_length(first, file_size, limit)
    raw = first + _pread_upto(fd, n, 8)
    return parse_header(raw, file_size), raw


def _pread_upto(fd: int, n: int, offset: int) -> bytes:
    """``n`` bytes at ``offset``, or fewer where the file ends first."""
    data = b""
    while len(data) < n:
        more = os.pread(fd, n - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data
