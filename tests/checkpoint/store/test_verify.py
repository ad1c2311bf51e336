"""store.verify: the one place that opens, sizes and checksums checkpoint files.

Every hostile kind of file (link, FIFO, socket, folder, wrong size, wrong bytes) is
CorruptCheckpoint, never a hang (each such test runs under a short pytest timeout); a file
deleted together with its checkpoint is CheckpointGone, never corrupt.
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import crc32c
import pytest

from unbroken.checkpoint.format import manifest as manifest_mod
from unbroken.checkpoint.format.manifest import FileEntry
from unbroken.checkpoint.store import verify
from unbroken.errors import CheckpointGone, CheckpointNotFound, CorruptCheckpoint

UUID = "u-1"
DATA = bytes(range(256)) * 100


def entry_of(rel: str, data: bytes) -> FileEntry:
    return FileEntry(rel, len(data), f"{crc32c.crc32c(data):08x}")


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A checkpoint folder: MANIFEST.json (content irrelevant here), data.bin and sub/deep.bin."""
    folder = tmp_path / UUID
    (folder / "sub").mkdir(parents=True)
    (folder / "MANIFEST.json").write_bytes(b"{}")
    (folder / "data.bin").write_bytes(DATA)
    (folder / "sub" / "deep.bin").write_bytes(DATA[:100])
    return folder


def test_a_good_file_verifies_reporting_progress_and_copying_to_a_sink(ckpt, monkeypatch):
    monkeypatch.setattr(verify, "CHUNK", 4096)
    done, sink = [], io.BytesIO()
    verify.verify_file(ckpt, UUID, entry_of("data.bin", DATA), progress=done.append, sink=sink)
    assert sum(done) == len(DATA) and len(done) == -(-len(DATA) // 4096)
    assert sink.getvalue() == DATA
    verify.verify_file(ckpt, UUID, entry_of("sub/deep.bin", DATA[:100]))


def test_verify_checkpoint_checks_every_file(ckpt):
    m = manifest_mod.build(1, [entry_of("data.bin", DATA), entry_of("sub/deep.bin", DATA[:100])], {}, uuid=UUID)
    verify.verify_checkpoint(ckpt, m)
    (ckpt / "sub" / "deep.bin").write_bytes(DATA[1:101])
    with pytest.raises(CorruptCheckpoint, match="sub/deep.bin fails its checksum"):
        verify.verify_checkpoint(ckpt, m)


def test_size_is_checked_before_reading(ckpt, monkeypatch):
    def no_read(*_a, **_k):
        raise AssertionError("read before the size check")
    monkeypatch.setattr(os, "preadv", no_read)
    entry = entry_of("data.bin", DATA + b"x")
    with pytest.raises(CorruptCheckpoint, match=f"checkpoint {UUID}: file data.bin has {len(DATA)} bytes, "
                                                f"the manifest says {len(DATA) + 1}"):
        verify.verify_file(ckpt, UUID, entry)


def test_different_bytes_fail_the_checksum(ckpt):
    (ckpt / "data.bin").write_bytes(b"\1" + DATA[1:])
    with pytest.raises(CorruptCheckpoint, match="data.bin fails its checksum"):
        verify.verify_file(ckpt, UUID, entry_of("data.bin", DATA))


def test_check_entry_compares_size_then_checksum():
    entry = entry_of("f", b"abc")
    verify.check_entry(UUID, entry, 3, entry.crc32c)
    with pytest.raises(CorruptCheckpoint, match="has 4 bytes"):
        verify.check_entry(UUID, entry, 4, entry.crc32c)
    with pytest.raises(CorruptCheckpoint, match="fails its checksum"):
        verify.check_entry(UUID, entry, 3, "00000000")


@pytest.mark.parametrize("rel", ["data.bin", "sub/deep.bin"])
def test_a_symbolic_link_is_refused_at_the_file(ckpt, tmp_path, rel):
    outside = tmp_path / "outside.bin"
    outside.write_bytes((ckpt / rel).read_bytes())
    (ckpt / rel).unlink()
    (ckpt / rel).symlink_to(outside)
    with pytest.raises(CorruptCheckpoint, match="symbolic link"):
        verify.verify_file(ckpt, UUID, entry_of(rel, outside.read_bytes()))


def test_a_symbolic_link_is_refused_on_a_folder_on_the_way(ckpt, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (ckpt / "sub").rename(elsewhere)
    (ckpt / "sub").symlink_to(elsewhere)
    with pytest.raises(CorruptCheckpoint, match="symbolic link"):
        verify.verify_file(ckpt, UUID, entry_of("sub/deep.bin", DATA[:100]))


def test_a_file_in_place_of_a_folder_is_corrupt(ckpt):
    with pytest.raises(CorruptCheckpoint, match="not a regular file"):
        verify.verify_file(ckpt, UUID, entry_of("data.bin/x", b""))


def make_fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def make_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen()
    return sock


def make_folder(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", [make_fifo, make_socket, make_folder], ids=["fifo", "socket", "folder"])
def test_a_non_regular_file_is_corrupt_never_a_hang(ckpt, make):
    keep = make(ckpt / "data.bin")
    try:
        with pytest.raises(CorruptCheckpoint, match=f"checkpoint {UUID}: file data.bin is not a regular file"):
            verify.verify_file(ckpt, UUID, entry_of("data.bin", DATA))
        with pytest.raises(CorruptCheckpoint, match="not a regular file"):
            verify.read_entry(ckpt, UUID, entry_of("data.bin", DATA))
    finally:
        if keep is not None:
            keep.close()


def test_a_missing_file_beside_its_manifest_is_corrupt(ckpt):
    (ckpt / "data.bin").unlink()
    with pytest.raises(CorruptCheckpoint, match="file data.bin is missing") as info:
        verify.verify_file(ckpt, UUID, entry_of("data.bin", DATA))
    assert not isinstance(info.value, CheckpointGone)


def test_a_file_deleted_with_its_checkpoint_is_gone_not_corrupt(ckpt, tmp_path):
    (ckpt / "data.bin").unlink()
    (ckpt / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointGone, match=f"checkpoint {UUID} was deleted") as info:
        verify.verify_file(ckpt, UUID, entry_of("data.bin", DATA))
    assert not isinstance(info.value, CorruptCheckpoint)
    ckpt.rename(tmp_path / ".tmp-deleting")  # how local storage deletes: rename, then remove
    with pytest.raises(CheckpointGone):
        verify.verify_file(ckpt, UUID, entry_of("sub/deep.bin", DATA[:100]))


def test_a_checkpoint_deleted_between_two_files_is_gone(ckpt):
    m = manifest_mod.build(1, [entry_of("data.bin", DATA), entry_of("sub/deep.bin", DATA[:100])], {}, uuid=UUID)

    def delete_it(_n):
        for path in (ckpt / "sub" / "deep.bin", ckpt / "MANIFEST.json"):
            path.unlink(missing_ok=True)
    with pytest.raises(CheckpointGone):
        verify.verify_checkpoint(ckpt, m, progress=delete_it)


def test_read_entry_returns_the_verified_bytes(ckpt):
    assert verify.read_entry(ckpt, UUID, entry_of("data.bin", DATA)) == DATA
    with pytest.raises(CorruptCheckpoint, match="fails its checksum"):
        verify.read_entry(ckpt, UUID, entry_of("data.bin", DATA[::-1]))


# -- read_small_file (MANIFEST.json) ----------------------------------------------------------------
def test_read_small_file_reads_a_regular_file(ckpt):
    assert verify.read_small_file(ckpt / "MANIFEST.json", 100) == b"{}"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make", [make_fifo, make_socket, make_folder], ids=["fifo", "socket", "folder"])
def test_read_small_file_refuses_a_non_regular_file_without_hanging(ckpt, make):
    keep = make(ckpt / "MANIFEST.json")
    try:
        with pytest.raises(CorruptCheckpoint, match="file MANIFEST.json is not a regular file"):
            verify.read_small_file(ckpt / "MANIFEST.json", 1 << 20)
    finally:
        if keep is not None:
            keep.close()


def test_read_small_file_refuses_a_link_and_a_huge_file_without_reading_it(ckpt, monkeypatch):
    (ckpt / "MANIFEST.json").unlink()
    (ckpt / "MANIFEST.json").symlink_to(ckpt / "data.bin")
    with pytest.raises(CorruptCheckpoint, match="symbolic link"):
        verify.read_small_file(ckpt / "MANIFEST.json", 1 << 20)
    (ckpt / "MANIFEST.json").unlink()
    with open(ckpt / "MANIFEST.json", "wb") as f:
        f.truncate(8 << 30)  # sparse: 8 GiB apparent, nothing allocated
    monkeypatch.setattr(os, "fdopen", None)  # reading it at all would fail
    with pytest.raises(CorruptCheckpoint, match="larger than any valid one"):
        verify.read_small_file(ckpt / "MANIFEST.json", 64 << 20)


def test_read_small_file_of_a_missing_file_is_not_found(ckpt, tmp_path):
    with pytest.raises(CheckpointNotFound):
        verify.read_small_file(ckpt / "nope.json", 100)
    with pytest.raises(CheckpointNotFound):
        verify.read_small_file(tmp_path / "no-folder" / "MANIFEST.json", 100)
