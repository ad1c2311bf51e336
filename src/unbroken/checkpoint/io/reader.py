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
from ..format.tensorfile import Header, TensorEntry
from ..store import verify

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


def read_tensors(directory: Path, uuid: str, entry: FileEntry | None, targets: dict[str, Any],
                 needed: dict[str, str] | None = None, before_fill: Callable[[Loaded], Any] | None = None
                 ) -> Loaded:
    """Read and verify the tensor file of ``directory`` described by the manifest ``entry``.

    ``targets`` maps tensor keys to existing tensors or arrays the bytes may be read into; one
    is used only if its dtype and shape match the file and its memory is a plain writable
    host block that overlaps no other target; target bytes are written only once the whole
    file verified. ``needed`` maps the keys the state tree refers to to their kind
    (``"numpy"``/``"torch"``): the file must then hold exactly these tensors, loadable as that
    kind, with a header no larger than they need -- all checked before any memory is
    allocated, so a hostile file costs no more memory than the state it claims to hold.
    ``before_fill(loaded)`` runs once the whole file verified and before any byte is written
    into a target (in-place tensors are then the targets, not yet filled; the others hold
    their verified values): if it raises, no target has changed. Raises :class:`CorruptCheckpoint` (no target changed) when the file does not match the
    manifest or the tree, :class:`~unbroken.errors.CheckpointGone` when the checkpoint was
    deleted under the reader.
    """
    if entry is None:
        if needed:
            raise CorruptCheckpoint(f"checkpoint {uuid}: the state refers to tensors, but there is no tensor file")
        loaded = Loaded(tensorfile.Header((), 0, {}), {}, None, {})
        if before_fill is not None:
            before_fill(loaded)
        return loaded
    with verify.opened(directory, uuid, entry) as fd:
        return _read(fd, uuid, entry, targets, needed, before_fill)


def _read(fd: int, uuid: str, entry: FileEntry, targets: dict[str, Any], needed: dict[str, str] | None,
          before_fill: Callable[[Loaded], Any] | None) -> Loaded:
    label = f"checkpoint {uuid}: file {entry.path}"
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    header, header_bytes = _header(fd, uuid, entry, needed)
    in_place, fresh_offsets, fresh_size = _plan(header, targets)
    fresh = HostBuffer(fresh_size) if fresh_size else None
    verify_pieces: list[_Piece] = []  # pass 1: every byte of the data section, in file order
    fill: list[_Piece] = []           # pass 2: the bytes of existing tensors
    for e in header.entries:
        file_at = header.data_start + e.begin
        for a in range(0, e.nbytes, READ_CHUNK):
            b = min(a + READ_CHUNK, e.nbytes)
            if e.name in in_place:
                verify_pieces.append(_Piece(file_at + a, None, b - a))
            else:
                start = fresh_offsets[e.name]
                verify_pieces.append(_Piece(file_at + a, fresh.region(start + a, start + b), b - a))
        if e.name in in_place:
            memory = in_place[e.name][1]
            for a in range(0, e.nbytes, FILL_CHUNK):
                b = min(a + FILL_CHUNK, e.nbytes)
                fill.append(_Piece(file_at + a, memory[a:b], b - a))
    bounce = HostBuffer(READ_CHUNK) if fill else None
    crc = _read_pieces(fd, label, verify_pieces, bounce, checksum.update(0, header_bytes))
    verify.check_entry(uuid, entry, entry.size, checksum.to_hex(crc))
    loaded = Loaded(header, {k: v[0] for k, v in in_place.items()}, fresh, fresh_offsets)
    if before_fill is not None:
        before_fill(loaded)
    _fill(fd, label, fill)
    return loaded


def _header(fd: int, uuid: str, entry: FileEntry, needed: dict[str, str] | None) -> tuple[Header, bytes]:
    """Read and check the header, then against ``needed``; return it and its bytes.

    A malformed header is reported as what it most likely is: if the file fails its checksum,
    that (CorruptCheckpoint); else the header's fault (TensorFileError). A well-formed header
    that disagrees with the state tree is refused at once, before any data is read.
    """
    label = f"checkpoint {uuid}: file {entry.path}"
    try:
        first = _pread_exact(fd, label, 8, 0) if entry.size >= 8 else b""
        limit = tensorfile.MAX_HEADER if needed is None else tensorfile.max_header_size(needed)
        header_bytes = first + _pread_exact(fd, label, tensorfile.header_length(first, entry.size, limit), 8)
        header = tensorfile.parse_header(header_bytes, entry.size)
    except TensorFileError as exc:
        crc = verify.stream_crc(fd, entry.size, label=label)
        verify.check_entry(uuid, entry, entry.size, checksum.to_hex(crc))
        raise TensorFileError(f"checkpoint {uuid}: {entry.path}: {exc}") from None
    if needed is not None:
        _check_needed(header, needed, f"checkpoint {uuid}: {entry.path}")
    return header, header_bytes


def _check_needed(header: Header, needed: dict[str, str], label: str) -> None:
    """The file must hold exactly the tensors the tree refers to, each loadable as its kind."""
    found = {e.name for e in header.entries}
    if found != needed.keys():
        extra, missing = sorted(found - needed.keys())[:3], sorted(needed.keys() - found)[:3]
        raise TensorFileError(f"{label}: the file holds {len(found)} tensors, the state tree refers to {len(needed)}"
                              + (f"; not referred to: {extra}" if extra else "")
                              + (f"; missing: {missing}" if missing else ""))
    for e in header.entries:
        if not arrays.loadable(e.dtype, needed[e.name]):
            raise TensorFileError(f"{label}: tensor {e.name!r} of dtype {e.dtype} cannot be loaded as {needed[e.name]}")


def _pread_exact(fd: int, label: str, n: int, offset: int) -> bytes:
    try:
        data = os.pread(fd, n, offset)
        while len(data) < n:
            more = os.pread(fd, n - len(data), offset + len(data))
            if not more:
                raise CorruptCheckpoint(f"{label} ended early")
            data += more
        return data
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot read {label}: {exc}") from exc


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


def _read_pieces(fd: int, label: str, pieces: list[_Piece], bounce: HostBuffer | None, crc: int) -> int:
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
        _preadv_exact(fd, label, buffers, batch[0].offset, sum(p.nbytes for p in batch))
        for buffer in buffers:
            crc = checksum.update(crc, buffer)
    return crc


def _fill(fd: int, label: str, pieces: list[_Piece]) -> None:
    """Pass 2: read the verified bytes of existing tensors into their memory (from the page cache).

    Large fills are split between threads: each copy from the page cache runs in the kernel
    with the GIL released, so they add up to the memory bandwidth of several cores.
    """
    batches = _batches(pieces, FILL_CHUNK)
    total = sum(p.nbytes for p in pieces)
    workers = max(1, min(FILL_THREADS, os.cpu_count() or 1, len(batches), total // (32 << 20)))

    def run(part: list[list[_Piece]]) -> None:
        for batch in part:
            _preadv_exact(fd, label, [p.dest for p in batch], batch[0].offset, sum(p.nbytes for p in batch))

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


def _preadv_exact(fd: int, label: str, buffers: list[np.ndarray], offset: int, total: int) -> None:
    views = [memoryview(b) for b in buffers]
    done = 0
    try:
        while done < total:
            n = os.preadv(fd, views, offset + done)
            if n <= 0:
                raise CorruptCheckpoint(f"{label} ended early")
            done += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot read {label}: {exc}") from exc
