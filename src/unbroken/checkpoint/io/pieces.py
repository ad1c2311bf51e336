"""Reading byte ranges of one open file: large ``preadv`` batches, checksummed or filled, in parallel.

The primitives of :mod:`.reader`. ``read_pieces`` reads the pieces as a few contiguous
stripes, one thread and one open file description (its own readahead) per stripe, checksums
each batch right after it is read, and joins the CRC32C values in file order (the verifying
pass); ``fill`` reads pieces straight into their destination memory with several threads (the
filling pass, from the page cache). Every thread spends its time in the kernel or in C with the
GIL released; the caller's thread is one of the workers and blocks until all are done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
from typing import Callable, Iterator

import numpy as np

from ...errors import CorruptCheckpoint, StorageError
from ..format import checksum
from .crcjoin import join
from .hostmem import HostBuffer

#: Bytes per read of the verifying pass (each read is checksummed at once by its thread).
READ_CHUNK = 16 << 20
#: Stripes (threads) of the verifying pass, at most one per core. Each reads its contiguous
#: part of the file sequentially through its own open file description, so each keeps its own
#: readahead window in flight. Threads taking interleaved chunks of one descriptor were 2x
#: slower than one thread (they defeat readahead); explicit POSIX_FADV_WILLNEED prefetching of
#: the whole file was 2x slower too.
READ_THREADS = 4
#: Bytes per preadv call of the filling pass.
FILL_CHUNK = 64 << 20
#: Threads of the filling pass (a copy from the page cache per thread, GIL released).
FILL_THREADS = 4
#: Below this many bytes a pass runs in the caller's thread alone (threads cost more than they give).
PARALLEL_MIN = 32 << 20
_MAX_IOV = 512


@dataclasses.dataclass
class Piece:
    offset: int               # in the file
    dest: np.ndarray | None   # uint8 destination (None: only checksummed, through a bounce buffer)
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


def _workers(limit: int, n_batches: int, total: int) -> int:
    """How many threads a pass of ``n_batches`` batches and ``total`` bytes gets (1: the caller alone)."""
    return 1 if total < PARALLEL_MIN else max(1, min(limit, n_batches))


def stripes(sizes: list[int], ways: int) -> list[range]:
    """Split items of ``sizes`` bytes into at most ``ways`` contiguous runs of about equal bytes."""
    total, out, start, done = sum(sizes), [], 0, 0
    for index, size in enumerate(sizes):
        done += size
        if done * ways >= total * (len(out) + 1) and len(out) < ways - 1:
            out.append(range(start, index + 1))
            start = index + 1
    out.append(range(start, len(sizes)))
    return [r for r in out if len(r)]


def run_parallel(n_items: int, workers: int, work: Callable[[int, int], None], name: str,
                 runs: list[range] | None = None) -> None:
    """Call ``work(item, worker)`` for every item in ``range(n_items)`` with ``workers`` threads
    (the caller's thread is worker 0; each worker's calls are sequential). Items are taken in
    order from a shared counter, or, with ``runs``, worker ``w`` does the items of ``runs[w]``.

    Blocks until every call returned. After the first exception no new item is started; that
    exception is raised once all workers stopped, so no worker still writes anywhere.
    """
    counter = itertools.count()  # next() is atomic under the GIL
    errors: list[BaseException] = []

    def loop(worker: int) -> None:
        items = runs[worker] if runs is not None else iter(lambda: next(counter), None)
        try:
            for item in items:
                if errors or item >= n_items:
                    return
                work(item, worker)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(w,), name=name, daemon=True) for w in range(1, workers)]
    for thread in threads:
        thread.start()
    loop(0)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def read_pieces(fd: int, label: str, pieces: list[Piece], crc: int, limit: int = READ_CHUNK) -> int:
    """Pass 1: read every piece, checksumming each batch right after it is read; return ``crc``
    extended with all their bytes in file order.

    Pieces without a destination are read into a bounce buffer of the reading thread (only to
    be checksummed). The batches are cut into up to :data:`READ_THREADS` contiguous stripes (no
    more than the cores), each read in order by one thread (caller included) through its own
    descriptor (:func:`_reopened`); each batch's CRC starts from 0 and the values are joined in
    file order at the end.
    """
    batches = _batches(pieces, limit)
    if not batches:
        return crc
    sizes = [sum(p.nbytes for p in batch) for batch in batches]
    workers = _workers(min(READ_THREADS, os.cpu_count() or 1), len(batches), sum(sizes))
    runs = stripes(sizes, workers)
    crcs = [0] * len(batches)
    bounces: list[HostBuffer | None] = [None] * len(runs)

    def work(item: int, worker: int, fd: int) -> None:
        buffers, used = [], 0
        for piece in batches[item]:
            if piece.dest is not None:
                buffers.append(piece.dest)
                continue
            if bounces[worker] is None:
                bounces[worker] = HostBuffer(max(sizes))  # one batch (a piece never spans two)
            buffers.append(bounces[worker].region(used, used + piece.nbytes))
            used += piece.nbytes
        preadv_exact(fd, label, buffers, batches[item][0].offset, sizes[item])
        value = 0
        for buffer in buffers:
            value = checksum.update(value, buffer)
        crcs[item] = value

    with _reopened(fd, len(runs)) as fds:
        run_parallel(len(batches), len(runs), lambda item, worker: work(item, worker, fds[worker]),
                     "unbroken-verify", runs)
    for value, size in zip(crcs, sizes):
        crc = join(crc, value, size)
    return crc


@contextlib.contextmanager
def _reopened(fd: int, count: int) -> Iterator[list[int]]:
    """``fd`` and ``count - 1`` more open file descriptions of the same file (each with its own
    readahead state), closed on exit. Where the file cannot be reopened through /proc (no
    /proc, permissions), ``fd`` itself is used again: correct, only the readahead is shared."""
    fds = [fd]
    try:
        for _ in range(count - 1):
            try:
                extra = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                extra = fd
            else:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(extra, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            fds.append(extra)
        yield fds
    finally:
        for extra in fds[1:]:
            if extra != fd:
                os.close(extra)


def fill(fd: int, label: str, pieces: list[Piece]) -> None:
    """Pass 2: read the verified bytes of existing tensors into their memory (from the page cache).

    Large fills are split between up to :data:`FILL_THREADS` threads (caller included): each
    copy from the page cache runs in the kernel with the GIL released, so they add up to the
    memory bandwidth of several cores.
    """
    batches = _batches(pieces, FILL_CHUNK)
    workers = _workers(min(FILL_THREADS, os.cpu_count() or 1), len(batches), sum(p.nbytes for p in pieces))

    def work(item: int, worker: int) -> None:
        batch = batches[item]
        preadv_exact(fd, label, [p.dest for p in batch], batch[0].offset, sum(p.nbytes for p in batch))

    run_parallel(len(batches), workers, work, "unbroken-fill")


def preadv_exact(fd: int, label: str, buffers: list[np.ndarray], offset: int, total: int) -> None:
    """Read exactly ``total`` bytes at ``offset`` into ``buffers`` (in order); any thread, GIL released
    while the kernel reads. Raises CorruptCheckpoint if the file ends first, StorageError on an OS error."""
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
