"""The read primitives: every byte read and checksummed in file order by several threads, errors raised."""

from __future__ import annotations

import os
import threading

import crc32c
import numpy as np
import pytest

from unbroken.checkpoint.io import pieces
from unbroken.checkpoint.io.pieces import Piece, fill, read_pieces, run_parallel
from unbroken.errors import CorruptCheckpoint


@pytest.fixture
def parallel(monkeypatch):
    """Several threads even for small files, and small batches (many of them)."""
    monkeypatch.setattr(pieces, "PARALLEL_MIN", 0)
    monkeypatch.setattr(pieces, "FILL_CHUNK", 1000)


@pytest.fixture
def data_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def cut(data: bytes, size: int, into: np.ndarray | None) -> list[Piece]:
    """Pieces of ``size`` bytes covering ``data`` (from offset 5), read into ``into`` or only checksummed."""
    out = []
    for a in range(5, len(data), size):
        b = min(a + size, len(data))
        out.append(Piece(a, None if into is None else into[a - 5:b - 5], b - a))
    return out


@pytest.mark.parametrize("size", [1, 777, 4096, 200_000])
@pytest.mark.parametrize("to_memory", [False, True], ids=["bounce", "destination"])
def test_read_pieces_checksums_every_byte_in_order(parallel, data_file, size, to_memory):
    fd, data = data_file
    into = np.zeros(len(data) - 5, np.uint8) if to_memory else None
    crc = read_pieces(fd, "f", cut(data, size, into), crc32c.crc32c(data[:5]), limit=3000)
    assert crc == crc32c.crc32c(data)
    if to_memory:
        assert into.tobytes() == data[5:]


def test_fill_reads_every_piece_into_its_memory(parallel, data_file):
    fd, data = data_file
    into = np.zeros(len(data) - 5, np.uint8)
    fill(fd, "f", cut(data, 333, into))
    assert into.tobytes() == data[5:]


def test_a_file_shorter_than_its_pieces_is_corrupt(parallel, data_file):
    fd, data = data_file
    beyond = cut(data, 1000, None) + [Piece(len(data), None, 10)]
    with pytest.raises(CorruptCheckpoint, match="ended early"):
        read_pieces(fd, "f", beyond, 0, limit=3000)


def test_run_parallel_runs_each_item_once_and_raises_the_first_error():
    seen, lock = [], threading.Lock()

    def work(item, worker):
        with lock:
            seen.append(item)

    run_parallel(100, 4, work, "t")
    assert sorted(seen) == list(range(100))

    def failing(item, worker):
        if item == 3:
            raise ValueError("item 3")

    with pytest.raises(ValueError, match="item 3"):
        run_parallel(50, 3, failing, "t")


@pytest.mark.parametrize("sizes, ways", [([], 2), ([5], 4), ([1] * 10, 3), ([100, 1, 1, 1], 2), ([3, 3, 3, 3], 4)])
def test_stripes_are_contiguous_cover_every_item_and_are_at_most_ways(sizes, ways):
    runs = pieces.stripes(sizes, ways)
    assert [i for r in runs for i in r] == list(range(len(sizes)))
    assert len(runs) <= ways and all(len(r) for r in runs)


def test_without_proc_the_stripes_share_the_descriptor(parallel, data_file, monkeypatch):
    fd, data = data_file
    real_open = os.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/self/fd/"):
            raise PermissionError(13, "no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_proc)
    assert read_pieces(fd, "f", cut(data, 500, None), crc32c.crc32c(data[:5]), limit=3000) == crc32c.crc32c(data)
    os.fstat(fd)  # still open: the fallback did not close the caller's descriptor
