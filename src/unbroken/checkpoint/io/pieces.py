"""Reading byte ranges of one open file: large ``preadv`` batches, checksummed or filled in parallel.

The primitives of :mod:`.reader`. ``read_pieces`` reads pieces in file order and extends a
CRC32C with each chunk right after it is read (the verifying pass); ``fill`` reads pieces straight
into their destination memory with several threads (the filling pass, from the page cache).
Every call spends its time in the kernel or in C with the GIL released.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import numpy as np

from ...errors import CorruptCheckpoint, StorageError
from ..format import checksum
from .hostmem import HostBuffer

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
class Piece:
    offset: int               # in the file
    dest: np.ndarray | None   # uint8 destination (None: only checksummed, through the bounce buffer)
    nbytes: int


def _batches(pieces: list[Piece], limit: int) -> list[list[Piece]]:
    """Consecutive pieces grouped into preadv calls of up to ``limit`` bytes."""
    out: list[list[Piece]] = []
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


def read_pieces(fd: int, label: str, pieces: list[Piece], bounce: HostBuffer | None, crc: int,
                limit: int = READ_CHUNK) -> int:
    """Pass 1: read every piece in file order, checksumming as it goes; return the CRC.

    Pieces without a destination are read into ``bounce`` (only to be checksummed).
    """
    for batch in _batches(pieces, limit):
        buffers, used = [], 0
        for piece in batch:
            if piece.dest is not None:
                buffers.append(piece.dest)
            else:
                buffers.append(bounce.region(used, used + piece.nbytes))
                used += piece.nbytes
        preadv_exact(fd, label, buffers, batch[0].offset, sum(p.nbytes for p in batch))
        for buffer in buffers:
            crc = checksum.update(crc, buffer)
    return crc


def fill(fd: int, label: str, pieces: list[Piece]) -> None:
    """Pass 2: read the verified bytes of existing tensors into their memory (from the page cache).

    Large fills are split between threads: each copy from the page cache runs in the kernel
    with the GIL released, so they add up to the memory bandwidth of several cores.
    """
    batches = _batches(pieces, FILL_CHUNK)
    total = sum(p.nbytes for p in pieces)
    workers = max(1, min(FILL_THREADS, os.cpu_count() or 1, len(batches), total // (32 << 20)))

    def run(part: list[list[Piece]]) -> None:
        for batch in part:
            preadv_exact(fd, label, [p.dest for p in batch], batch[0].offset, sum(p.nbytes for p in batch))

    if workers == 1:
        run(batches)
        return
    parts = [batches[i::workers] for i in range(workers)]
    errors: list[BaseException] = []

    def guarded(part: list[list[Piece]]) -> None:
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


def preadv_exact(fd: int, label: str, buffers: list[np.ndarray], offset: int, total: int) -> None:
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
