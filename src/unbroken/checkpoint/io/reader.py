"""Reading a tensor file straight into the tensors that will hold it, verified, State untouched if not.

Destinations: the memory of the State's existing tensors where they fit (same kind, dtype and
shape, C-contiguous, on the host: module parameters and buffers, optimizer moments, plain
tensors and arrays), else one fresh page-aligned buffer whose views become the restored
tensors. No temporary copy of the state is made.

Contract on corruption: **the State is left untouched.** The file is read in two passes:

1. Verify: every byte, in file order, in large ``preadv`` calls, CRC32C computed on each
   chunk right after it is read (GIL released). Tensors that go to the fresh buffer are read
   into it in this pass (a buffer nobody else sees yet); bytes meant for existing tensors
   pass through one small reusable bounce buffer. Then the checksum is compared with the
   manifest.
2. Fill, only if pass 1 verified: the bytes of the existing tensors are read again, now from
   the page cache (memory speed, no disk), straight into their memory.

So a cold restore costs one disk read plus one memory copy of the in-place bytes, and no
extra memory. Alternatives measured or considered: reading into live tensors at once while
backing their previous contents up (same copy, plus a state-sized backup buffer whose page
faults cost more than the copy on fresh processes); a staging buffer verified before copying
(same copy, plus the state-sized buffer); reading into live tensors without a backup (leaves a
corrupt checkpoint's bytes in the parameters whenever no older checkpoint overwrites them all).
The second pass trusts that a committed checkpoint does not change while it is read
(checkpoints are immutable; if the page cache cannot hold the file, pass 2 reads the disk again).
A StateMismatch raised later by ``load_state_dict`` can leave tensors partly loaded, as torch's
own ``load_state_dict`` does.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import struct
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import CorruptCheckpoint, StorageError, TensorFileError
from ..format import arrays
from ..format import checksum
from ..format import tensorfile
from .hostmem import HostBuffer
from ..format.manifest import FileEntry
from ..store.catalog import check_entry
from ..format.tensorfile import Header, TensorEntry

#: Bytes per read of the verifying pass (16 MiB reads, each checksummed at once, read a cold
#: file as fast as ``dd bs=16M`` on the machines measured; explicit POSIX_FADV_WILLNEED
#: prefetching made it 2x slower there, so only POSIX_FADV_SEQUENTIAL is given).
READ_CHUNK = 16 << 20
#: Bytes per preadv call of the filling pass.
FILL_CHUNK = 64 << 20
#: Threads of the filling pass (a copy from the page cache per thread, GIL released).
FILL_THREADS = 4
_MAX_IOV = 512


@dataclasses.dataclass
class _Piece:
    offset: int               # in the file
    dest: np.ndarray | None   # uint8 destination (None: only checksummed, through the bounce buffer)
    nbytes: int


class Loaded:
    """The tensors of a verified file: ``tensor_of(uuid)`` gives the decoder its ``tensor(key, kind)``.

    Tensors read in place are returned as the very objects that were given as targets.
    """

    def __init__(self, header: Header, targets: dict[str, Any], fresh: HostBuffer | None,
                 fresh_offsets: dict[str, int]):
        self.header = header
        self._by_name = header.by_name
        self._targets = targets
        self._fresh, self._fresh_offsets = fresh, fresh_offsets

    @property
    def in_place(self) -> set[str]:
        """Keys whose bytes were read into the given target objects."""
        return set(self._targets)

    def tensor_of(self, uuid: str) -> Callable[[str, str], Any]:
        def tensor(key: str, kind: str) -> Any:
            entry = self._by_name.get(key)
            if entry is None:
                raise CorruptCheckpoint(f"checkpoint {uuid}: state refers to a missing tensor {key!r}")
            if key in self._targets:
                return self._targets[key]
            if entry.nbytes == 0:
                return arrays.from_bytes(bytearray(0), entry.dtype, entry.shape, kind)
            begin = self._fresh_offsets[key]
            return arrays.from_bytes(self._fresh.region(begin, begin + entry.nbytes), entry.dtype, entry.shape, kind)
        return tensor


def read_tensors(path: Path, uuid: str, entry: FileEntry | None, targets: dict[str, Any]) -> Loaded:
    """Read and verify the tensor file ``path`` described by the manifest ``entry``.

    ``targets`` maps tensor keys to existing tensors or arrays the bytes may be read into; one
    is used only if its dtype and shape match the file and its memory is a plain writable
    host block that overlaps no other target; target bytes are written only once the whole
    file verified. Raises :class:`CorruptCheckpoint` (no target changed) when the file does
    not match the manifest.
    """
    if entry is None:
        return Loaded(tensorfile.Header((), 0, {}), {}, None, {})
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {uuid}: file {entry.path} is missing") from None
    except OSError as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: cannot open {entry.path}: {exc}") from None
    try:
        return _read(fd, path, uuid, entry, targets)
    finally:
        os.close(fd)


def _read(fd: int, path: Path, uuid: str, entry: FileEntry, targets: dict[str, Any]) -> Loaded:
    size = os.fstat(fd).st_size
    if size != entry.size:
        raise CorruptCheckpoint(
            f"checkpoint {uuid}: file {entry.path} has {size} bytes, the manifest says {entry.size} (truncated?)"
        )
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    header_bytes = _read_header_bytes(fd, path, uuid, entry, size)
    crc = checksum.update(0, header_bytes)
    try:
        header = tensorfile.parse_header(header_bytes, size)
    except TensorFileError as exc:
        # A damaged header is reported as what it is: a file that fails its checksum.
        _check_whole(fd, path, uuid, entry, size, crc, len(header_bytes))
        raise TensorFileError(f"checkpoint {uuid}: {entry.path}: {exc}") from None

    in_place, fresh_offsets, fresh_size = _plan(header, targets)
    fresh = HostBuffer(fresh_size) if fresh_size else None
    verify: list[_Piece] = []  # pass 1: every byte of the data section, in file order
    fill: list[_Piece] = []    # pass 2: the bytes of existing tensors
    for e in header.entries:
        file_at = header.data_start + e.begin
        for a in range(0, e.nbytes, READ_CHUNK):
            b = min(a + READ_CHUNK, e.nbytes)
            if e.name in in_place:
                verify.append(_Piece(file_at + a, None, b - a))
            else:
                start = fresh_offsets[e.name]
                verify.append(_Piece(file_at + a, fresh.region(start + a, start + b), b - a))
        if e.name in in_place:
            memory = in_place[e.name][1]
            for a in range(0, e.nbytes, FILL_CHUNK):
                b = min(a + FILL_CHUNK, e.nbytes)
                fill.append(_Piece(file_at + a, memory[a:b], b - a))
    bounce = HostBuffer(READ_CHUNK) if fill else None
    crc = _read_pieces(fd, path, verify, bounce, crc, size)
    check_entry(uuid, entry, size, checksum.to_hex(crc))
    _fill(fd, path, fill)
    return Loaded(header, {k: v[0] for k, v in in_place.items()}, fresh, fresh_offsets)


def _read_header_bytes(fd: int, path: Path, uuid: str, entry: FileEntry, size: int) -> bytes:
    if size < 8:
        _check_whole(fd, path, uuid, entry, size, 0, 0)
        raise TensorFileError(f"checkpoint {uuid}: {entry.path}: tensor file is shorter than its 8-byte header length")
    first = _pread_exact(fd, path, 8, 0)
    (n,) = struct.unpack("<Q", first)
    if n > tensorfile._MAX_HEADER or 8 + n > size:
        _check_whole(fd, path, uuid, entry, size, checksum.update(0, first), 8)
        raise TensorFileError(f"checkpoint {uuid}: {entry.path}: tensor file header length {n} does not fit the file")
    return first + _pread_exact(fd, path, n, 8)


def _check_whole(fd: int, path: Path, uuid: str, entry: FileEntry, size: int, crc: int, done: int) -> None:
    """Checksum the rest of a file whose header is unusable; raise if it differs from the manifest."""
    buffer = bytearray(min(READ_CHUNK, max(size - done, 1)))
    while done < size:
        chunk = _pread_exact(fd, path, min(len(buffer), size - done), done)
        crc = checksum.update(crc, chunk)
        done += len(chunk)
    check_entry(uuid, entry, size, checksum.to_hex(crc))


def _pread_exact(fd: int, path: Path, n: int, offset: int) -> bytes:
    try:
        data = os.pread(fd, n, offset)
        while len(data) < n:
            more = os.pread(fd, n - len(data), offset + len(data))
            if not more:
                raise CorruptCheckpoint(f"file {path} ended early")
            data += more
        return data
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot read {path}: {exc}") from exc


def _plan(header: Header, targets: dict[str, Any]) -> tuple[dict[str, tuple[Any, np.ndarray]], dict[str, int], int]:
    """Choose each tensor's destination: ``(in_place, fresh_offsets, fresh_size)``."""
    in_place: dict[str, tuple[Any, np.ndarray]] = {}
    starts: list[int] = []  # sorted starts of the memory taken so far, and their ends
    ends: list[int] = []
    fresh_offsets: dict[str, int] = {}
    fresh_size = 0
    for e in header.entries:  # file order: item sizes never grow, so packed offsets stay aligned
        target = targets.get(e.name)
        memory = _fits(target, e) if target is not None and e.nbytes else None
        if memory is not None:
            start = memory.__array_interface__["data"][0]
            i = bisect.bisect_right(starts, start)
            # Aliases (tied weights, views of one another) are read in place once only.
            if (i == 0 or ends[i - 1] <= start) and (i == len(starts) or start + e.nbytes <= starts[i]):
                starts.insert(i, start)
                ends.insert(i, start + e.nbytes)
                in_place[e.name] = (target, memory)
                continue
        fresh_offsets[e.name] = fresh_size
        fresh_size += e.nbytes
    return in_place, fresh_offsets, fresh_size


def _fits(target: Any, entry: TensorEntry) -> np.ndarray | None:
    try:
        dtype, shape = arrays.describe(target, entry.name)
    except Exception:  # noqa: BLE001 - anything odd is simply not a target
        return None
    if dtype != entry.dtype or shape != entry.shape:
        return None
    memory = arrays.writable_bytes(target)
    return memory if memory is not None and memory.nbytes == entry.nbytes else None


def _batches(pieces: list[_Piece], limit: int) -> list[list[_Piece]]:
    """Consecutive pieces grouped into preadv calls of up to ``limit`` bytes."""
    out: list[list[_Piece]] = []
    total = 0
    for piece in pieces:
        batch = out[-1] if out else None
        contiguous = batch and batch[-1].offset + batch[-1].nbytes == piece.offset
        if batch and contiguous and len(batch) < _MAX_IOV and total + piece.nbytes <= limit:
            batch.append(piece)
            total += piece.nbytes
        else:
            out.append([piece])
            total = piece.nbytes
    return out


def _read_pieces(fd: int, path: Path, pieces: list[_Piece], bounce: HostBuffer | None, crc: int, size: int) -> int:
    """Pass 1: read every piece in file order, checksumming as it goes; return the CRC.

    Pieces without a destination are read into ``bounce`` (only to be checksummed).
    """
    for batch in _batches(pieces, READ_CHUNK):
        buffers, used = [], 0
        for piece in batch:
            if piece.dest is not None:
                buffers.append(piece.dest)
            else:
                buffers.append(bounce.region(used, used + piece.nbytes))
                used += piece.nbytes
        _preadv_exact(fd, path, buffers, batch[0].offset, sum(p.nbytes for p in batch))
        for buffer in buffers:
            crc = checksum.update(crc, buffer)
    return crc


def _fill(fd: int, path: Path, pieces: list[_Piece]) -> None:
    """Pass 2: read the verified bytes of existing tensors into their memory (from the page cache).

    Large fills are split between threads: each copy from the page cache runs in the kernel
    with the GIL released, so they add up to the memory bandwidth of several cores.
    """
    batches = _batches(pieces, FILL_CHUNK)
    total = sum(p.nbytes for p in pieces)
    workers = max(1, min(FILL_THREADS, os.cpu_count() or 1, len(batches), total // (32 << 20)))

    def run(part: list[list[_Piece]]) -> None:
        for batch in part:
            _preadv_exact(fd, path, [p.dest for p in batch], batch[0].offset, sum(p.nbytes for p in batch))

    if workers == 1:
        run(batches)
        return
    parts = [batches[i::workers] for i in range(workers)]
    errors: list[BaseException] = []

    def guarded(part: list[list[_Piece]]) -> None:
        try:
            run(part)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(part,), name="unbroken-fill") for part in parts[1:]]
    for thread in threads:
        thread.start()
    guarded(parts[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _preadv_exact(fd: int, path: Path, buffers: list[np.ndarray], offset: int, total: int) -> None:
    views = [memoryview(b) for b in buffers]
    done = 0
    try:
        while done < total:
            n = os.preadv(fd, views, offset + done)
            if n <= 0:
                raise CorruptCheckpoint(f"file {path} ended early")
            done += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot read {path}: {exc}") from exc
