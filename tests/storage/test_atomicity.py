"""RenameCommit: only the files a writer did not make durable are fsynced again; temporaries."""

from __future__ import annotations

import os

import pytest

import unbroken.storage.atomicity as atomicity
from unbroken.storage import RenameCommit


def test_finish_fsyncs_only_the_unsynced_files_then_the_manifest(tmp_path, monkeypatch):
    synced = []
    real = atomicity.fsync_path
    monkeypatch.setattr(atomicity, "fsync_path", lambda path, directory=False: (synced.append((path.name, directory)),
                                                                               real(path, directory)))
    commit = RenameCommit(tmp_path)
    staged = commit.stage("ck")
    (staged / "durable.bin").write_bytes(b"written and fsynced by its writer")
    (staged / "user.txt").write_bytes(b"written by user code")
    commit.finish(staged, "ck", "MANIFEST.json", b"{}", unsynced=["user.txt"])
    files = [name for name, directory in synced if not directory]
    assert files == ["user.txt"]  # durable.bin is not fsynced twice; the manifest is written durably
    assert (tmp_path / "ck" / "MANIFEST.json").read_bytes() == b"{}"


@pytest.mark.parametrize("name, temporary", [(".tmp-x-host-1", True), (".tmp-deleting-x-h-2", True), ("x", False),
                                             (".leases", False)])
def test_temporary_entries_are_recognised(name, temporary):
    assert RenameCommit.is_temporary(name) is temporary


def test_stale_lists_without_removing_and_clean_stale_removes(tmp_path):
    from oshelpers import dead_pid

    import socket
    stale = tmp_path / f".tmp-ck-{socket.gethostname()}-{dead_pid()}"
    stale.mkdir()
    mine = RenameCommit(tmp_path).stage("mine")
    commit = RenameCommit(tmp_path)
    assert commit.stale() == [stale.name] and stale.exists()
    assert commit.clean_stale() == [stale.name] and not stale.exists() and mine.exists()
    assert os.listdir(tmp_path) == [mine.name]
