"""MarkerCommit on an in-process store: claims, uploads, the create-only manifest, failures, stale
uploads; and put_staged of RenameCommit. The same against a real S3 server: test_s3.py."""

from __future__ import annotations

import errno
import json
import socket
import time

import numpy as np
import pytest

from unbroken.errors import ConfigError, StorageError
from unbroken.storage import RenameCommit

MANIFEST = "MANIFEST.json"


@pytest.fixture
def storage(tmp_path, obstore):
    from unbroken.storage import open_storage

    return open_storage("memory://", cache_dir=tmp_path / "cache")


def keys(storage, name):
    return sorted(o["path"] for o in storage.client.list(f"{name}/"))


def plant_record(storage, name, **record):
    storage.client.put(f"{name}/x.bin", b"left behind")
    storage.client.put(f"{name}/.writer", json.dumps(record).encode())


def test_stage_claims_the_name_so_a_second_writer_is_refused_before_uploading(storage):
    first = storage.commit.stage("ck")
    with pytest.raises(StorageError) as info:
        storage.commit.stage("ck")
    assert info.value.errno == errno.EEXIST
    assert "exists already" in str(info.value) and f"on host {socket.gethostname()}" in str(info.value)
    storage.commit.finish(first, "ck", MANIFEST, b"{}")
    with pytest.raises(StorageError) as info:
        storage.commit.stage("ck")
    assert info.value.errno == errno.EEXIST


def test_finish_uploads_the_local_files_and_put_staged_ones_then_the_manifest_last(storage, monkeypatch):
    staged = storage.commit.stage("ck")
    (staged / "user").mkdir()
    (staged / "user" / "notes.txt").write_text("written by user code")
    storage.commit.put_staged(staged, "tensors.bin", b"t" * 100)
    puts = []
    real = storage.client.put
    monkeypatch.setattr(storage.client, "put", lambda key, data, create=False: (puts.append((key, create)),
                                                                                real(key, data, create=create)))
    storage.commit.finish(staged, "ck", MANIFEST, b'{"m": 1}')
    assert puts[-1] == ("ck/MANIFEST.json", True)  # last, and create-only
    assert ("ck/user/notes.txt", False) in puts
    assert storage.read_bytes("ck", "user/notes.txt") == b"written by user code"
    assert storage.read_bytes("ck", "tensors.bin") == b"t" * 100
    assert not staged.exists()


def test_put_staged_sends_any_contiguous_buffer_byte_for_byte(storage):
    staged = storage.commit.stage("ck")
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    storage.commit.put_staged(staged, "a.bin", memoryview(array))
    storage.commit.finish(staged, "ck", MANIFEST, b"{}")
    assert storage.read_bytes("ck", "a.bin") == array.tobytes()


@pytest.mark.parametrize("relpath", [MANIFEST, ".writer", "../x", "/x", "a//b", "a\\b"])
def test_put_staged_refuses_reserved_and_unsafe_paths(storage, relpath):
    staged = storage.commit.stage("ck")
    with pytest.raises(ConfigError):
        storage.commit.put_staged(staged, relpath, b"x")


def test_a_refused_manifest_keeps_the_committed_checkpoint_intact(storage):
    first = storage.commit.stage("ck")
    storage.commit.put_staged(first, "t.bin", b"first")
    storage.commit.finish(first, "ck", MANIFEST, b'{"first": 1}')
    from unbroken.storage.cache import new_staging

    second = new_staging(storage.cache, "ck")  # a writer that skipped the claim (or lost a race)
    (second / "other.bin").write_bytes(b"second")
    with pytest.raises(StorageError) as info:
        storage.commit.finish(second, "ck", MANIFEST, b'{"second": 1}')
    assert info.value.errno == errno.EEXIST and "exists already" in str(info.value)
    assert storage.read_bytes("ck", MANIFEST) == b'{"first": 1}'
    assert storage.read_bytes("ck", "t.bin") == b"first"  # nothing of the first was removed
    assert not second.exists()


def test_a_manifest_put_whose_answer_was_lost_counts_as_committed(storage, monkeypatch):
    staged = storage.commit.stage("ck")
    real = storage.client.put

    def put_twice(key, data, create=False):  # the first try landed; its retry is refused
        if key.endswith(MANIFEST):
            real(key, data, create=create)
        real(key, data, create=create)

    monkeypatch.setattr(storage.client, "put", put_twice)
    storage.commit.finish(staged, "ck", MANIFEST, b'{"mine": 1}')
    assert storage.names() == ["ck"]


def test_a_failed_upload_publishes_nothing_and_removes_what_was_uploaded(storage, monkeypatch):
    staged = storage.commit.stage("ck")
    storage.commit.put_staged(staged, "early.bin", b"uploaded before the failure")
    (staged / "late.bin").write_bytes(b"x")
    real = storage.client.put

    def failing(key, data, create=False):
        if key.endswith("late.bin"):
            raise StorageError(errno.EIO, "connection reset")
        real(key, data, create=create)

    monkeypatch.setattr(storage.client, "put", failing)
    with pytest.raises(StorageError, match="connection reset"):
        storage.commit.finish(staged, "ck", MANIFEST, b"{}")
    assert storage.names() == []
    assert keys(storage, "ck") == []
    assert not staged.exists()
    monkeypatch.setattr(storage.client, "put", real)
    storage.commit.finish(storage.commit.stage("ck"), "ck", MANIFEST, b"{}")  # the name is free again
    assert storage.names() == ["ck"]


def test_discard_removes_the_local_folder_and_the_uploads(storage):
    staged = storage.commit.stage("ck")
    storage.commit.put_staged(staged, "a.bin", b"a")
    storage.commit.discard(staged)
    assert keys(storage, "ck") == []
    assert not staged.exists()


def test_leftovers_of_a_dead_writer_of_this_host_are_stale_and_cleaned(storage):
    from oshelpers import dead_pid

    plant_record(storage, "dead", host=socket.gethostname(), pid=dead_pid(), start_time=None, time=time.time())
    assert storage.commit.stale() == ["dead"]
    assert keys(storage, "dead") != []  # stale() removes nothing
    assert storage.commit.clean_stale() == ["dead"]
    assert keys(storage, "dead") == []


def test_a_live_writer_is_never_stale(storage):
    from oshelpers import live_process

    staged = storage.commit.stage("mine")
    storage.commit.put_staged(staged, "a.bin", b"a")
    with live_process() as pid:
        plant_record(storage, "theirs", host=socket.gethostname(), pid=pid, start_time=None, time=0)
        assert storage.commit.stale() == []
        assert storage.commit.clean_stale() == []
    assert keys(storage, "mine") == ["mine/.writer", "mine/a.bin"]


def test_a_writer_of_another_host_is_stale_only_after_24_hours(storage, monkeypatch):
    import unbroken.storage.marker as marker

    plant_record(storage, "far", host="another-host", pid=1, start_time=None, time=time.time())
    assert storage.commit.stale() == []
    later = time.time() + 25 * 3600
    monkeypatch.setattr(marker.time, "time", lambda: later)
    assert storage.commit.stale() == ["far"]


def test_objects_without_record_or_manifest_are_stale_after_24_hours(storage, monkeypatch):
    import unbroken.storage.marker as marker

    storage.client.put("orphan/x.bin", b"x")
    assert storage.commit.stale() == []
    later = time.time() + 25 * 3600
    monkeypatch.setattr(marker.time, "time", lambda: later)
    assert storage.commit.clean_stale() == ["orphan"]
    assert keys(storage, "orphan") == []


def test_committed_checkpoints_are_never_stale(storage, monkeypatch):
    from oshelpers import dead_pid
    import unbroken.storage.marker as marker

    storage.commit.finish(storage.commit.stage("ck"), "ck", MANIFEST, b"{}")
    storage.client.put("ck/.writer", json.dumps({"host": socket.gethostname(), "pid": dead_pid()}).encode())
    monkeypatch.setattr(marker.time, "time", lambda: time.monotonic() + 1e9)
    assert storage.commit.stale() == []


def test_uploads_left_by_a_failure_while_the_store_was_down_are_stale_at_once(storage, monkeypatch):
    staged = storage.commit.stage("ck")
    storage.commit.put_staged(staged, "a.bin", b"a")
    monkeypatch.setattr(storage.client, "put", lambda *a, **k: (_ for _ in ()).throw(
        StorageError(errno.ECONNREFUSED, "down")))
    monkeypatch.setattr(storage.client, "list", lambda *a, **k: (_ for _ in ()).throw(
        StorageError(errno.ECONNREFUSED, "down")))
    (staged / "b.bin").write_bytes(b"b")
    with pytest.raises(StorageError):
        storage.commit.finish(staged, "ck", MANIFEST, b"{}")
    monkeypatch.undo()
    assert storage.commit.stale() == ["ck"]  # this process gave it up, although it is alive
    assert storage.commit.clean_stale() == ["ck"]
    assert keys(storage, "ck") == []


def test_rename_commit_put_staged_writes_durably_into_the_staged_folder(tmp_path, monkeypatch):
    import unbroken.storage.fsio as fsio

    synced = []
    real = fsio.os.fsync
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    commit = RenameCommit(tmp_path)
    staged = commit.stage("ck")
    array = np.arange(10, dtype=np.float64)
    commit.put_staged(staged, "sub/t.bin", memoryview(array))
    assert synced, "put_staged returned before an fsync"
    commit.finish(staged, "ck", MANIFEST, b"{}")
    assert (tmp_path / "ck" / "sub" / "t.bin").read_bytes() == array.tobytes()
    with pytest.raises(ConfigError):
        commit.put_staged(commit.stage("x"), "../escape", b"x")
