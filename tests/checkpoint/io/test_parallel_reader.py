"""The verified read path with several reader threads: every corruption refused, State untouched.

Small batches and no size threshold, so that even these small files are read by several
threads out of order and the CRC32C values are joined in file order.
"""

from __future__ import annotations

import numpy as np
import pytest
from ckpt_helpers import flip_byte

from unbroken.checkpoint.files import load, save
from unbroken.checkpoint.io import pieces, reader
from unbroken.errors import CorruptCheckpoint


@pytest.fixture(autouse=True)
def many_threads_small_batches(monkeypatch):
    monkeypatch.setattr(pieces, "PARALLEL_MIN", 0)
    monkeypatch.setattr(pieces, "READ_THREADS", 4)
    monkeypatch.setattr(pieces, "FILL_CHUNK", 4096)
    monkeypatch.setattr(reader, "READ_CHUNK", 4096)


def arrays(seed: int, count: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"t{i:03d}": rng.standard_normal(size + i % 7).astype(np.float32) for i in range(count)}


@pytest.mark.parametrize("count, size", [(1, 1), (3, 10), (400, 37), (4, 100_000)],
                         ids=["tiny", "small", "many-small", "few-large"])
def test_a_parallel_restore_fills_every_tensor_in_place(tmp_path, count, size):
    saved = arrays(0, count, size)
    save(saved, tmp_path / "c")
    into = arrays(1, count, size)
    memory = {k: v.ctypes.data for k, v in into.items()}
    load(tmp_path / "c", into)
    for key, value in saved.items():
        assert np.array_equal(into[key], value)
        assert into[key].ctypes.data == memory[key]


@pytest.mark.parametrize("where", [0.0, 0.3, 0.5, 0.9, -1])
@pytest.mark.parametrize("count, size", [(400, 37), (4, 100_000)], ids=["many-small", "few-large"])
def test_a_flipped_byte_anywhere_is_refused_and_leaves_the_state_untouched(tmp_path, where, count, size):
    save(arrays(0, count, size), tmp_path / "c")
    path = tmp_path / "c" / "tensors.safetensors"
    flip_byte(path, int(path.stat().st_size * where) if where >= 0 else -1)
    into = arrays(1, count, size)
    before = {k: v.copy() for k, v in into.items()}
    with pytest.raises(CorruptCheckpoint):
        load(tmp_path / "c", into)
    for key, value in before.items():
        assert np.array_equal(into[key], value)


def test_a_truncated_file_is_refused(tmp_path):
    save(arrays(0, 4, 100_000), tmp_path / "c")
    path = tmp_path / "c" / "tensors.safetensors"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    into = arrays(1, 4, 100_000)
    before = {k: v.copy() for k, v in into.items()}
    with pytest.raises(CorruptCheckpoint):
        load(tmp_path / "c", into)
    assert all(np.array_equal(into[k], v) for k, v in before.items())
