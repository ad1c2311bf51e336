"""LocalStorage: staging, atomic publish, listing, deletion, stale staging clean-up, error messages."""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest
from oshelpers import dead_pid, free_bytes, live_process

from unbroken.errors import ConfigError, StorageError
from unbroken.storage import LocalStorage
from unbroken.storage.fsio import storage_error

MANIFEST = "MANIFEST.json"


def stage_with(storage: LocalStorage, name: str, files: dict[str, bytes]):
    staged = storage.commit.stage(name)
    for rel, data in files.items():
        path = staged / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return staged


def publish(storage: LocalStorage, staged, name: str, manifest: bytes = b"{}") -> None:
    """Publish every file of ``staged`` (none was fsynced by its writer)."""
    files = [p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()]
    storage.commit.finish(staged, name, MANIFEST, manifest, files)


def test_stage_is_hidden_and_named_after_host_and_pid(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    staged = storage.commit.stage("ck1")
    assert staged.is_dir() and staged.parent == tmp_path / "root"
    assert staged.name == f".tmp-ck1-{socket.gethostname()}-{os.getpid()}"
    assert list(staged.iterdir()) == []
    assert storage.names() == []


def test_publish_makes_files_visible_with_the_manifest_written_last(tmp_path):
    storage = LocalStorage(tmp_path)
    staged = stage_with(storage, "ck1", {"a.bin": b"alpha", "sub/b.txt": b"beta"})
    assert storage.names() == []
    publish(storage, staged, "ck1", b'{"m": 1}')
    assert not staged.exists()
    assert storage.names() == ["ck1"]
    assert storage.read_bytes("ck1", "a.bin") == b"alpha"
    assert storage.read_bytes("ck1", "sub/b.txt") == b"beta"
    assert storage.read_bytes("ck1", MANIFEST) == b'{"m": 1}'
    with storage.open("ck1", "a.bin") as f:
        assert f.read() == b"alpha"
    assert storage.local_dir("ck1") == tmp_path / "ck1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck1"]  # no staging left


def test_publish_over_an_existing_name_fails_and_keeps_the_old_one(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(storage, stage_with(storage, "ck", {"f": b"old"}), "ck", b"{}")
    staged = stage_with(storage, "ck", {"f": b"new"})
    with pytest.raises(StorageError) as info:
        publish(storage, staged, "ck", b"{}")
    assert info.value.errno == errno.EEXIST
    assert "exists already" in str(info.value)
    assert not staged.exists()
    assert storage.read_bytes("ck", "f") == b"old"


def test_names_ignore_hidden_entries_and_plain_files(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / ".tmp-x-host-1").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a-file").write_bytes(b"")
    (tmp_path / "real").mkdir()
    assert storage.names() == ["real"]


def test_names_of_a_missing_root_is_empty(tmp_path):
    assert LocalStorage(tmp_path / "nope").names() == []


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", ".hidden", "..", ".", "../up"])
def test_bad_names_raise_config_error(tmp_path, name):
    storage = LocalStorage(tmp_path)
    with pytest.raises(ConfigError, match="invalid storage directory name"):
        storage.commit.stage(name)
    with pytest.raises(ConfigError):
        storage.local_dir(name)
    with pytest.raises(ConfigError):
        storage.delete(name)


def test_open_refuses_a_symlinked_file(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    publish(storage, stage_with(storage, "ck", {"f": b"x"}), "ck", b"{}")
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    (tmp_path / "root" / "ck" / "link").symlink_to(outside)
    with pytest.raises(StorageError) as info:
        storage.read_bytes("ck", "link")
    assert info.value.errno == errno.ELOOP


def test_reading_a_folder_is_a_storage_error(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(storage, stage_with(storage, "ck", {"d/f": b"x"}), "ck", b"{}")
    with pytest.raises(StorageError) as info:  # regression: a bare IsADirectoryError escaped
        storage.read_bytes("ck", "d")
    assert info.value.errno == errno.EISDIR


def test_missing_file_is_a_storage_error_caused_by_file_not_found(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(storage, stage_with(storage, "ck", {}), "ck", b"{}")
    with pytest.raises(StorageError) as info:
        storage.read_bytes("ck", "nope")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert info.value.errno == errno.ENOENT


def test_delete_removes_everything_and_tolerates_missing(tmp_path):
    storage = LocalStorage(tmp_path)
    publish(storage, stage_with(storage, "ck", {"a": b"1", "d/b": b"2"}), "ck", b"{}")
    storage.delete("ck")
    assert storage.names() == []
    assert list(tmp_path.iterdir()) == []  # the renamed ".tmp-deleting-..." is gone too
    storage.delete("ck")  # missing: no error
    assert list(tmp_path.iterdir()) == []


def test_discard_removes_staging_and_ignores_missing(tmp_path):
    storage = LocalStorage(tmp_path)
    staged = stage_with(storage, "ck", {"a": b"1"})
    storage.commit.discard(staged)
    assert not staged.exists()
    storage.commit.discard(staged)
    assert not staged.exists()


def test_download_copies_a_published_directory(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    publish(storage, stage_with(storage, "ck", {"a": b"1", "d/b": b"2"}), "ck", b"{}")
    dest = storage.download("ck", tmp_path / "copy")
    assert (dest / "a").read_bytes() == b"1"
    assert (dest / "d" / "b").read_bytes() == b"2"
    assert (dest / MANIFEST).read_bytes() == b"{}"


# -- stale staging directories ----------------------------------------------------------------

def test_clean_stale_removes_staging_of_dead_pids_only(tmp_path):
    storage = LocalStorage(tmp_path)
    host = socket.gethostname()
    dead = tmp_path / f".tmp-ck-dead-{host}-{dead_pid()}"
    dead.mkdir()
    (dead / "partial.bin").write_bytes(b"half a checkpoint")
    dead_delete = tmp_path / f".tmp-deleting-ck-old-{host}-{dead_pid()}"
    dead_delete.mkdir()
    mine = storage.commit.stage("ck-mine")  # this (live) process
    (mine / "f").write_bytes(b"in progress")
    published = tmp_path / "published"
    published.mkdir()
    with live_process() as pid:
        other_live = tmp_path / f".tmp-ck-other-{host}-{pid}"
        other_live.mkdir()
        removed = storage.commit.clean_stale()
        assert sorted(removed) == sorted([dead.name, dead_delete.name])
        assert not dead.exists() and not dead_delete.exists()
        assert mine.exists() and (mine / "f").read_bytes() == b"in progress"
        assert other_live.exists()
        assert published.exists()
    # Once that process has ended, its staging directory is stale too.
    assert storage.commit.clean_stale() == [other_live.name]
    assert mine.exists() and storage.commit.clean_stale() == []


def test_clean_stale_only_removes_old_staging_of_other_hosts(tmp_path):
    storage = LocalStorage(tmp_path)
    recent = tmp_path / ".tmp-ck-a-some-other-host-12345"
    old = tmp_path / ".tmp-ck-b-some-other-host-12345"
    recent.mkdir()
    old.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    assert storage.commit.clean_stale() == [old.name]
    assert recent.exists() and not old.exists()


def test_clean_stale_of_a_missing_root_is_empty(tmp_path):
    assert LocalStorage(tmp_path / "nope").commit.clean_stale() == []


# -- error messages ---------------------------------------------------------------------------

def test_storage_error_says_the_disk_is_full():
    err = storage_error("write", "/x/y", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert "/x/y" in str(err) and "disk is full" in str(err)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_storage_error_says_no_permission(code):
    err = storage_error("write", "/x", OSError(code, os.strerror(code)))
    assert err.errno == code and "no permission" in str(err)
    assert isinstance(err.__cause__, OSError)


def test_publish_on_a_full_disk_leaves_nothing_visible(small_disk):
    storage = LocalStorage(small_disk / "root")
    publish(storage, stage_with(storage, "old", {"f": b"kept"}), "old", b"{}")
    staged = storage.commit.stage("new")
    # Fill every free byte with the data file, so that only the manifest no longer fits.
    with open(staged / "data", "wb") as f:
        try:
            f.write(b"\0" * free_bytes(small_disk))
            f.flush()
        except OSError as exc:  # pragma: no cover - depends on tmpfs accounting
            assert exc.errno == errno.ENOSPC
    assert free_bytes(small_disk) == 0
    with pytest.raises(StorageError) as info:
        publish(storage, staged, "new", b'{"manifest": "does not fit"}')
    assert info.value.errno == errno.ENOSPC
    assert "disk is full" in str(info.value)
    assert storage.names() == ["old"]
    assert not staged.exists()
    assert sorted(p.name for p in (small_disk / "root").iterdir()) == ["old"]
    assert storage.read_bytes("old", "f") == b"kept"
