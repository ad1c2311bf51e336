"""ObjectStorage on in-process stores (obstore's MemoryStore and LocalStore): listing, reading,
downloading, materializing, deleting. The same code against a real S3 server: test_s3.py."""

from __future__ import annotations

import errno
import io

import pytest

from unbroken.errors import ConfigError, StorageError

MANIFEST = "MANIFEST.json"


@pytest.fixture
def storage(tmp_path, obstore):
    from unbroken.storage import open_storage

    return open_storage("memory://", cache_dir=tmp_path / "cache")


@pytest.fixture
def on_disk(tmp_path, obstore):
    """An ObjectStorage over a LocalStore, so tests can plant objects the API would never write."""
    from obstore.store import LocalStore

    from unbroken.storage.object import ObjectStorage

    root = tmp_path / "bucket"
    root.mkdir()
    return ObjectStorage(LocalStore(prefix=root), "file-bucket://test", tmp_path / "cache"), root


def commit(storage, name, files, manifest=b'{"m": 1}'):
    staged = storage.commit.stage(name)
    for rel, data in files.items():
        storage.commit.put_staged(staged, rel, data)
    storage.commit.finish(staged, name, MANIFEST, manifest)


def test_names_are_the_prefixes_with_a_manifest_only(storage):
    commit(storage, "done", {"a.bin": b"a"})
    staged = storage.commit.stage("pending")
    storage.commit.put_staged(staged, "a.bin", b"uploaded, never committed")
    storage.client.put("orphan/x.bin", b"no writer record, no manifest")
    storage.client.put("deep/sub/MANIFEST.json", b"a manifest not at the top of a name")
    storage.client.put(".hidden/MANIFEST.json", b"{}")
    storage.client.put("back\\slash/MANIFEST.json", b"{}")
    assert storage.names() == ["done"]
    assert storage.change_token() is None


def test_read_bytes_and_open_read_what_was_put(storage):
    data = bytes(range(256)) * 4096
    commit(storage, "ck", {"t.bin": data, "sub/s.json": b"{}"})
    assert storage.read_bytes("ck", "t.bin") == data
    assert storage.read_bytes("ck", "sub/s.json") == b"{}"
    with storage.open("ck", "t.bin") as f:
        assert f.read(10) == data[:10]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        f.seek(1000)
        assert f.read(3) == data[1000:1003]
        assert f.tell() == 1003


def test_reading_a_missing_file_is_enoent_with_a_file_not_found_cause(storage):
    with pytest.raises(StorageError) as info:
        storage.read_bytes("nothing", "MANIFEST.json")
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert "memory://nothing/MANIFEST.json" in str(info.value)
    with pytest.raises(StorageError) as info:
        storage.open("nothing", "x")
    assert info.value.errno == errno.ENOENT


def test_a_reader_refuses_to_mix_two_versions_of_an_object(storage, monkeypatch):
    import unbroken.storage.objio as objio

    monkeypatch.setattr(objio, "READ_BUFFER", 16)
    commit(storage, "ck", {"t.bin": b"a" * 100})
    with storage.open("ck", "t.bin") as f:
        assert f.read(1) == b"a"
        storage.client.put("ck/t.bin", b"b" * 100)  # replaced under the reader
        with pytest.raises(StorageError) as info:
            f.read()
    assert info.value.errno == errno.ESTALE


@pytest.mark.parametrize("relpath", ["../x", "/abs", "a//b", "a\\b", "", "./x"])
def test_unsafe_relative_paths_are_refused(storage, relpath):
    with pytest.raises(ConfigError):
        storage.read_bytes("ck", relpath)


def test_download_copies_every_object_but_the_writer_record(storage, tmp_path):
    commit(storage, "ck", {"t.bin": b"t" * (3 << 20), "sub/dir/u.txt": b"u"})
    dest = storage.download("ck", tmp_path / "dest")
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [MANIFEST, "sub/dir/u.txt", "t.bin"]
    assert (dest / "t.bin").read_bytes() == b"t" * (3 << 20)


def test_a_large_object_is_downloaded_in_parallel_ranges_intact(storage, tmp_path, monkeypatch):
    import unbroken.storage.objio as objio

    monkeypatch.setattr(objio, "RANGE_SIZE", 64 * 1024)
    data = bytes(range(251)) * 4000 + b"tail"  # ~1 MB: 16 ranges and a short last one
    commit(storage, "ck", {"big.bin": data})
    assert (storage.download("ck", tmp_path / "d") / "big.bin").read_bytes() == data


def test_download_of_a_missing_name_is_enoent(storage, tmp_path):
    with pytest.raises(StorageError) as info:
        storage.download("nothing", tmp_path / "d")
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize("bad_key", ["ck\\..\\..\\evil", "ck/a\\b"])
def test_download_refuses_object_keys_that_could_leave_the_folder(on_disk, tmp_path, bad_key):
    storage, root = on_disk
    commit(storage, "ck", {"ok.bin": b"ok"})
    storage.client.put(bad_key.replace("ck\\", "ck/", 1) if bad_key.startswith("ck\\") else bad_key, b"evil")
    with pytest.raises(StorageError) as info:
        storage.download("ck", tmp_path / "dest")
    assert info.value.errno == errno.EINVAL
    assert not list(tmp_path.rglob("evil"))


def test_materialize_downloads_once_and_reuses_the_copy_while_the_manifest_is_the_same(storage, monkeypatch):
    commit(storage, "ck", {"t.bin": b"t" * 1000})
    path = storage.materialize("ck")
    assert path == storage.cache / "ck"
    assert (path / "t.bin").read_bytes() == b"t" * 1000
    assert (path / MANIFEST).read_bytes() == b'{"m": 1}'
    downloads = []
    monkeypatch.setattr(storage, "_download", lambda *a: downloads.append(a))
    assert storage.materialize("ck") == path
    assert downloads == []  # the cached copy was reused


def test_materialize_replaces_a_copy_whose_manifest_differs(storage):
    commit(storage, "ck", {"t.bin": b"new"}, manifest=b'{"m": 2}')
    stale_copy = storage.cache / "ck"
    stale_copy.mkdir()
    (stale_copy / MANIFEST).write_bytes(b'{"m": 1}')
    (stale_copy / "t.bin").write_bytes(b"old")
    (stale_copy / "leftover.bin").write_bytes(b"not in the new checkpoint")
    path = storage.materialize("ck")
    assert (path / "t.bin").read_bytes() == b"new"
    assert not (path / "leftover.bin").exists()
    assert not [p for p in storage.cache.iterdir() if p.name.startswith(".tmp-")]


def test_a_failed_materialize_leaves_no_copy_and_no_temporary(storage, monkeypatch):
    commit(storage, "ck", {"t.bin": b"t"})

    def broken(name, dest, skip):
        (dest / "half.bin").write_bytes(b"half")
        raise StorageError(errno.EIO, "connection lost")

    monkeypatch.setattr(storage, "_download", broken)
    with pytest.raises(StorageError, match="connection lost"):
        storage.materialize("ck")
    assert not (storage.cache / "ck").exists()
    assert not [p for p in storage.cache.iterdir() if p.name.startswith(".tmp-")]


def test_materialize_of_a_name_without_manifest_is_enoent(storage):
    staged = storage.commit.stage("pending")
    storage.commit.put_staged(staged, "a.bin", b"a")
    with pytest.raises(StorageError) as info:
        storage.materialize("pending")
    assert info.value.errno == errno.ENOENT


def test_delete_removes_every_object_and_the_local_copy(storage):
    commit(storage, "ck", {"t.bin": b"t", "sub/u.bin": b"u"})
    commit(storage, "other", {"t.bin": b"t"})
    storage.materialize("ck")
    storage.delete("ck")
    assert storage.names() == ["other"]
    assert [o["path"] for o in storage.client.list("ck/")] == []
    assert not (storage.cache / "ck").exists()
    storage.delete("ck")  # deleting again is no error


def test_delete_removes_the_manifest_first_and_the_writer_record_last(storage, monkeypatch):
    commit(storage, "ck", {"a.bin": b"a", "b.bin": b"b"})
    order = []
    real = storage.client.delete
    monkeypatch.setattr(storage.client, "delete", lambda keys: (order.append(sorted(keys)), real(keys)))
    storage.delete("ck")
    assert order == [["ck/MANIFEST.json"], ["ck/a.bin", "ck/b.bin"], ["ck/.writer"]]


def test_materialize_of_local_storage_is_its_own_folder(tmp_path):
    from unbroken.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    staged = storage.commit.stage("ck")
    storage.commit.finish(staged, "ck", MANIFEST, b"{}")
    assert storage.materialize("ck") == tmp_path / "ck"
    with pytest.raises(StorageError) as info:
        storage.materialize("missing")
    assert info.value.errno == errno.ENOENT
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_large_reads_come_in_parallel_ranges_of_one_version(storage, monkeypatch):
    import unbroken.storage.objio as objio

    monkeypatch.setattr(objio, "RANGE_SIZE", 4096)
    monkeypatch.setattr(objio, "READ_BUFFER", 1024)
    data = bytes(range(256)) * 1000 + b"end"
    commit(storage, "ck", {"t.bin": data, "empty.bin": b""})
    ranges = []
    real = storage.client.get_range
    monkeypatch.setattr(storage.client, "get_range", lambda key, start, end, etag=None: (
        ranges.append((start, end, etag)), real(key, start, end, etag))[1])
    assert bytes(storage.read_bytes("ck", "t.bin")) == data
    assert len(ranges) == -(-len(data) // 4096) and all(etag for *_, etag in ranges)
    with storage.open("ck", "t.bin") as f:
        f.seek(10)
        buffer = bytearray(20000)
        assert f.readinto(buffer) == 20000
        assert buffer == data[10:20010]
        assert f.read() == data[20010:]
    assert storage.read_bytes("ck", "empty.bin") == b""
    with storage.open("ck", "empty.bin") as f:
        assert f.read() == b""
