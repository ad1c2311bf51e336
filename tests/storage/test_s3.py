"""The object-store backend against a real S3 server (SeaweedFS started by scripts/s3-up.sh):
the create-only commit marker, invisible and stale uploads, crash-safe deletion, corruption that
verification can see, bad credentials / bucket / endpoint, an outage, and clean process exits."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from waiting import wait_until

from unbroken.errors import CorruptCheckpoint, StorageError

MANIFEST = "MANIFEST.json"
#: A dead endpoint must fail within this many seconds (see unbroken.storage.objclient).
FAIL_WITHIN_S = 20


@pytest.fixture
def storage(s3_url, tmp_path):
    from unbroken.storage import open_storage

    return open_storage(s3_url, cache_dir=tmp_path / "cache")


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def commit(storage, name, files, manifest=b'{"m": 1}'):
    staged = storage.commit.stage(name)
    for rel, data in files.items():
        storage.commit.put_staged(staged, rel, data)
    storage.commit.finish(staged, name, MANIFEST, manifest)


def test_a_checkpoint_round_trips_through_s3(storage, tmp_path, monkeypatch):
    import unbroken.storage.objclient as objclient

    monkeypatch.setattr(objclient, "PART_SIZE", 5 * 1024 * 1024)  # the smallest part S3 allows
    big = bytes(range(256)) * (48 * 1024)  # 12 MiB: a multipart upload in three parts
    staged = storage.commit.stage("ck")
    (staged / "user.txt").write_text("from user code")
    storage.commit.put_staged(staged, "tensors.bin", memoryview(big))
    storage.commit.finish(staged, "ck", MANIFEST, b'{"m": 1}')
    assert storage.names() == ["ck"]
    assert storage.read_bytes("ck", "tensors.bin") == big
    with storage.open("ck", "tensors.bin") as f:
        f.seek(7 * 1024 * 1024)
        assert f.read(100) == big[7 * 1024 * 1024:7 * 1024 * 1024 + 100]
    local = storage.materialize("ck")
    assert (local / "tensors.bin").read_bytes() == big
    assert (local / "user.txt").read_text() == "from user code"


def test_a_second_writer_of_the_same_name_is_refused_and_the_first_manifest_kept(storage, s3_url, tmp_path):
    from unbroken.storage import open_storage
    from unbroken.storage.cache import new_staging

    other = open_storage(s3_url, cache_dir=tmp_path / "other-cache")  # another process, another machine
    first = storage.commit.stage("ck")
    with pytest.raises(StorageError) as info:
        other.commit.stage("ck")  # refused by the create-only writer record
    assert info.value.errno == errno.EEXIST
    storage.commit.put_staged(first, "t.bin", b"first")
    storage.commit.finish(first, "ck", MANIFEST, b'{"writer": "first"}')
    racer = new_staging(other.cache, "ck")  # a writer that got past the claim: the manifest put decides
    (racer / "u.bin").write_bytes(b"second")
    with pytest.raises(StorageError) as info:
        other.commit.finish(racer, "ck", MANIFEST, b'{"writer": "second"}')
    assert info.value.errno == errno.EEXIST
    assert "exists already" in str(info.value) and s3_url in str(info.value)
    assert storage.read_bytes("ck", MANIFEST) == b'{"writer": "first"}'
    assert storage.read_bytes("ck", "t.bin") == b"first"


def test_uploads_without_a_manifest_are_invisible_and_cleaned_once_their_writer_is_gone(storage, s3_url, tmp_path):
    result = run_python(f"""
        import os
        from unbroken.storage import open_storage
        storage = open_storage({s3_url!r}, cache_dir={str(tmp_path / "writer-cache")!r})
        staged = storage.commit.stage("crashed")
        storage.commit.put_staged(staged, "t.bin", b"x" * 1000)
        os._exit(0)  # dies before finish: no manifest
    """)
    assert result.returncode == 0, result.stderr
    commit(storage, "good", {"t.bin": b"good"})
    assert storage.names() == ["good"]
    assert storage.commit.stale() == ["crashed"]
    assert storage.commit.clean_stale() == ["crashed"]
    assert [o["path"] for o in storage.client.list("crashed/")] == []
    assert storage.names() == ["good"]


def test_a_deleter_that_dies_after_removing_the_manifest_leaves_an_invisible_stale_rest(storage, s3_url, tmp_path):
    commit(storage, "ck", {"a.bin": b"a", "b.bin": b"b"})
    result = run_python(f"""
        import os
        from unbroken.storage import open_storage
        storage = open_storage({s3_url!r}, cache_dir={str(tmp_path / "deleter-cache")!r})
        real = storage.client.delete
        def delete_then_die(keys):
            real(keys)
            if any(k.endswith("MANIFEST.json") for k in keys):
                os._exit(0)  # killed right after the manifest went
        storage.client.delete = delete_then_die
        storage.delete("ck")
        os._exit(1)
    """)
    assert result.returncode == 0, result.stderr
    assert storage.names() == []  # readers stopped seeing it with the manifest
    assert sorted(o["path"] for o in storage.client.list("ck/")) == ["ck/.writer", "ck/a.bin", "ck/b.bin"]
    assert storage.commit.clean_stale() == ["ck"]
    assert [o["path"] for o in storage.client.list("ck/")] == []


def test_an_overwritten_byte_range_is_seen_by_reads_and_by_verification(storage):
    from unbroken.checkpoint.store.catalog import CheckpointStore

    store = CheckpointStore(storage)
    pending = store.begin(10)
    (pending.path / "weights.bin").write_bytes(bytes(4096))
    manifest = store.commit(pending)
    store.verify(manifest.uuid, force=True)  # intact
    damaged = bytearray(bytes(4096))
    damaged[1000:1004] = b"\xde\xad\xbe\xef"
    storage.client.put(f"{manifest.uuid}/weights.bin", bytes(damaged))  # bit rot / a rogue writer
    assert storage.read_bytes(manifest.uuid, "weights.bin")[1000:1004] == b"\xde\xad\xbe\xef"
    with pytest.raises(CorruptCheckpoint):
        store.verify(manifest.uuid, force=True)


def test_wrong_credentials_name_the_url_and_what_to_check(s3_url, monkeypatch, tmp_path):
    from unbroken.storage import open_storage

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    storage = open_storage(s3_url, cache_dir=tmp_path)
    with pytest.raises(StorageError) as info:
        storage.names()
    assert info.value.errno == errno.EACCES
    assert s3_url in str(info.value) and "AWS_SECRET_ACCESS_KEY" in str(info.value)


def test_a_missing_bucket_names_the_url_and_what_to_check(s3_server, monkeypatch, tmp_path):
    from unbroken.storage import open_storage

    s3_server.apply(monkeypatch)
    storage = open_storage("s3://no-such-bucket-here/p", cache_dir=tmp_path)
    for call in (storage.names, lambda: storage.commit.stage("ck")):
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.errno == errno.ENXIO, info.value
        assert "s3://no-such-bucket-here/p" in str(info.value) and "bucket does not exist" in str(info.value)


def test_an_unreachable_endpoint_fails_fast_naming_the_url(s3_url, monkeypatch, tmp_path):
    from s3server import _free_port_block

    from unbroken.storage import open_storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port_block()}")  # nothing listens
    storage = open_storage(s3_url, cache_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.names()
    assert time.monotonic() - started < FAIL_WITHIN_S
    assert info.value.errno == errno.ECONNREFUSED
    assert s3_url in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)


@pytest.fixture
def own_server(tmp_path, monkeypatch):
    """A server of this test alone (it is stopped and restarted)."""
    from s3server import start_server

    server = start_server(tmp_path / "own-s3")
    server.apply(monkeypatch)
    yield server
    server.stop()


def test_an_outage_mid_upload_fails_in_bounded_time_and_a_commit_after_restart_succeeds(own_server, tmp_path):
    from unbroken.storage import open_storage

    url = own_server.fresh_url()
    storage = open_storage(url, cache_dir=tmp_path / "cache")
    staged = storage.commit.stage("during")
    uploads, failure = [], []

    def keep_uploading() -> None:
        try:
            while True:
                storage.commit.put_staged(staged, f"part-{len(uploads)}.bin", bytes(4 * 1024 * 1024))
                uploads.append(time.monotonic())
        except StorageError as exc:
            failure.append((time.monotonic(), exc))

    uploader = threading.Thread(target=keep_uploading, daemon=True)
    uploader.start()
    wait_until(lambda: uploads, what="a first upload")
    own_server.stop()
    stopped = time.monotonic()
    uploader.join(FAIL_WITHIN_S + 10)
    assert failure, "put_staged did not fail with the server stopped"
    failed_at, exc = failure[0]
    assert failed_at - stopped < FAIL_WITHIN_S
    assert url in str(exc)
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.commit.finish(staged, "during", MANIFEST, b"{}")
    assert time.monotonic() - started < 2 * FAIL_WITHIN_S  # the upload fails, then the cleanup gives up
    assert url in str(info.value)
    own_server.start()
    commit(storage, "after", {"t.bin": b"t"})
    assert storage.names() == ["after"]
    assert storage.commit.clean_stale() == ["during"]  # the leftovers of the failed commit


def test_a_process_that_used_the_object_store_exits_cleanly_20_times_in_a_row(s3_url, tmp_path):
    code = f"""
        import sys
        from unbroken.storage import open_storage
        storage = open_storage({s3_url!r}, cache_dir={str(tmp_path / "cache")!r})
        name = "ck" + sys.argv[1]
        staged = storage.commit.stage(name)
        storage.commit.put_staged(staged, "t.bin", b"x" * 100_000)
        storage.commit.finish(staged, name, "MANIFEST.json", b"{{}}")
        assert name in storage.names()
        assert storage.read_bytes(name, "t.bin") == b"x" * 100_000
        storage.materialize(name)
    """
    for run in range(20):
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(run)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"run {run} exited {result.returncode}: {result.stderr[-2000:]}"
