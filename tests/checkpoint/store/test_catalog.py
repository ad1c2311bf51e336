"""CheckpointStore: the commit protocol, verification, "newest good", bad input, and a full disk."""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import crc32c
import numpy as np
import pytest
from ckpt_helpers import flip_byte, fresh_store, restore, save, truncate
from oshelpers import dead_pid, free_bytes

from unbroken.checkpoint.format import manifest as manifest_mod
from unbroken.checkpoint import CheckpointStore, State
from unbroken.errors import (
    CheckpointNotFound, ConfigError, CorruptCheckpoint, StorageError, UnsafePathError,
)
from unbroken.storage import LocalStorage

MANIFEST = "MANIFEST.json"


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "ckpts"


@pytest.fixture
def store(root) -> CheckpointStore:
    return CheckpointStore(LocalStorage(root), trial={"experiment": "exp", "number": 1})


def commit_files(store: CheckpointStore, files: dict[str, bytes], steps: int, metadata=None):
    pending = store.begin(steps, metadata)
    for rel, data in files.items():
        path = pending.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return store.commit(pending)


def three_checkpoints(store: CheckpointStore) -> list[str]:
    return [commit_files(store, {"model.bin": bytes([i]) * 1000, "sub/opt.bin": b"opt%d" % i}, 10 * i).uuid
            for i in (1, 2, 3)]


def visible(root: Path) -> list[str]:
    """What is in the store's folder, but for the read-lease files (storage bookkeeping)."""
    return sorted(p.name for p in root.iterdir() if p.name != ".leases")


# -- commit protocol --------------------------------------------------------------------------

def test_pending_checkpoint_is_hidden_until_commit(store, root):
    pending = store.begin(5, {"note": "x"})
    (pending.path / "f.bin").write_bytes(b"data")
    assert pending.path.parent == root and pending.path.name.startswith(".tmp-")
    assert store.list() == [] and store.scan() == ([], [])
    m = store.commit(pending)
    assert not pending.path.exists()
    assert visible(root) == [m.uuid]
    assert [c.uuid for c in store.list()] == [m.uuid]


def test_committed_checkpoint_has_a_manifest_with_size_and_crc32c_per_file(store, root):
    files = {"model.bin": os.urandom(3000), "nested/deeper/opt.bin": b"", "notes.txt": "ünï".encode()}
    m = commit_files(store, files, 42, {"metrics": {"loss": 0.25}})
    doc = json.loads((root / m.uuid / MANIFEST).read_bytes())
    assert doc["uuid"] == m.uuid and doc["steps_completed"] == 42
    assert doc["trial"] == {"experiment": "exp", "number": 1}
    assert doc["metadata"] == {"metrics": {"loss": 0.25}}
    listed = {f["path"]: f for f in doc["files"]}
    assert set(listed) == set(files)  # the manifest itself is not listed
    for rel, data in files.items():
        assert listed[rel]["size"] == len(data) == (root / m.uuid / rel).stat().st_size
        assert listed[rel]["crc32c"] == f"{crc32c.crc32c(data):08x}"
    assert store.manifest(m.uuid) == m
    assert fresh_store(root).verify(m.uuid) == m


def test_list_is_ordered_by_steps(store):
    uuids = {steps: commit_files(store, {"f": b"%d" % steps}, steps).uuid for steps in (30, 10, 20)}
    assert [m.steps_completed for m in store.list()] == [10, 20, 30]
    assert [m.uuid for m in store.candidates()] == [uuids[30], uuids[20], uuids[10]]
    assert store.newest_good().uuid == uuids[30]
    store.mark_corrupt(uuids[30], "test")
    assert store.newest_good().uuid == uuids[20]


def test_readers_ignore_staging_dirs_and_dirs_without_a_manifest(store, root):
    good = commit_files(store, {"f": b"1"}, 1)
    # A staging directory with a complete-looking manifest inside: still invisible.
    staging = root / f".tmp-{manifest_mod.new_uuid()}-{socket.gethostname()}-{os.getpid()}"
    staging.mkdir()
    (staging / MANIFEST).write_bytes((root / good.uuid / MANIFEST).read_bytes())
    # A directory that never got its manifest (a crash between rename and ... or a stray folder).
    stray = root / manifest_mod.new_uuid()
    stray.mkdir()
    (stray / "f").write_bytes(b"x")
    listed, problems = store.scan()
    assert [m.uuid for m in listed] == [good.uuid]
    assert [(p.uuid, "no MANIFEST.json" in p.reason) for p in problems] == [(stray.name, True)]
    assert store.newest_good().uuid == good.uuid


def test_commit_with_an_existing_uuid_fails_and_keeps_the_original(store, root):
    m = commit_files(store, {"f": b"original"}, 1)
    pending = store.begin(2, uuid=m.uuid)
    (pending.path / "f").write_bytes(b"impostor")
    with pytest.raises(StorageError, match="exists already"):
        store.commit(pending)
    assert not pending.path.exists()
    assert (root / m.uuid / "f").read_bytes() == b"original"
    assert fresh_store(root).verify(m.uuid) == m


@pytest.mark.parametrize("steps", [-1, 1.0, True, "3", None, 2**63, 2**64])
def test_bad_steps_raise_config_error_before_anything_is_staged(store, root, steps):
    with pytest.raises(ConfigError, match="steps_completed"):
        store.begin(steps)
    assert not root.exists() or visible(root) == []


@pytest.mark.parametrize("metadata", [{"x": float("nan")}, {"x": object()}, ["not", "a dict"], {"x": {1, 2}}])
def test_bad_metadata_raises_config_error_before_anything_is_staged(store, root, metadata):
    with pytest.raises(ConfigError, match="metadata"):
        store.begin(1, metadata)
    assert not root.exists() or visible(root) == []


def test_the_largest_step_count_the_index_can_hold_is_committed(store):
    m = commit_files(store, {"f": b"x"}, 2**63 - 1)
    assert fresh_store(store.storage.root).newest_good().steps_completed == 2**63 - 1 == m.steps_completed


def test_symlink_in_a_checkpoint_being_committed_is_refused(store, root, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    pending = store.begin(1)
    (pending.path / "ok.bin").write_bytes(b"ok")
    (pending.path / "link.bin").symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic links are not allowed"):
        store.commit(pending)
    assert not pending.path.exists() and store.list() == [] and outside.read_bytes() == b"secret"


def test_symlinked_directory_in_a_checkpoint_being_committed_is_refused(store, tmp_path):
    (tmp_path / "outdir").mkdir()
    pending = store.begin(1)
    (pending.path / "sub").symlink_to(tmp_path / "outdir", target_is_directory=True)
    with pytest.raises(ConfigError, match="sub"):
        store.commit(pending)
    assert not pending.path.exists()


def test_special_files_and_a_user_manifest_are_refused(store):
    pending = store.begin(1)
    os.mkfifo(pending.path / "fifo")
    with pytest.raises(ConfigError, match="only regular files"):
        store.commit(pending)
    pending = store.begin(1)
    (pending.path / MANIFEST).write_bytes(b"{}")
    with pytest.raises(ConfigError, match="reserved"):
        store.commit(pending)
    assert store.list() == []


def test_abort_discards(store):
    pending = store.begin(1)
    (pending.path / "f").write_bytes(b"x")
    store.abort(pending)
    assert not pending.path.exists() and store.list() == []


# -- corruption -------------------------------------------------------------------------------

DAMAGE = {
    "flip-first-byte": lambda p: flip_byte(p, 0),
    "flip-last-byte": lambda p: flip_byte(p, -1),
    "flip-middle-byte": lambda p: flip_byte(p, 500),
    "truncate": lambda p: truncate(p),
    "truncate-to-zero": lambda p: truncate(p, 0),
    "append": lambda p: p.write_bytes(p.read_bytes() + b"!"),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_newest_checkpoint_fails_verification_and_falls_back(store, root, damage):
    uuids = three_checkpoints(store)
    damage(root / uuids[-1] / "model.bin")
    reader = fresh_store(root)  # a new process: nothing remembered
    with pytest.raises(CorruptCheckpoint) as info:
        reader.verify(uuids[-1])
    assert uuids[-1] in str(info.value) and "model.bin" in str(info.value)
    reported = []
    newest = reader.newest_good(on_corrupt=lambda uuid, reason: reported.append((uuid, reason)))
    assert newest.uuid == uuids[1]
    assert [u for u, _ in reported] == [uuids[-1]]
    assert "model.bin" in reported[0][1]
    # The damaged one is still listed (its manifest is fine), it just never verifies.
    assert [m.uuid for m in reader.list()] == uuids


def test_missing_file_listed_in_the_manifest_is_corrupt(store, root):
    uuids = three_checkpoints(store)
    (root / uuids[-1] / "sub" / "opt.bin").unlink()
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match=f"{uuids[-1]}: file sub/opt.bin is missing"):
        reader.verify(uuids[-1])
    assert reader.newest_good().uuid == uuids[1]


def test_every_checkpoint_corrupt_means_no_newest_good(store, root):
    uuids = three_checkpoints(store)
    for u in uuids:
        flip_byte(root / u / "model.bin")
    reported = []
    assert fresh_store(root).newest_good(on_corrupt=lambda u, r: reported.append(u)) is None
    assert reported == uuids[::-1]


def test_verification_is_remembered_unless_forced(store, root):
    uuids = three_checkpoints(store)  # committed by this store: their checksums are known good
    flip_byte(root / uuids[-1] / "model.bin")
    assert store.verify(uuids[-1]).uuid == uuids[-1]  # remembered from commit, not re-read
    with pytest.raises(CorruptCheckpoint, match=uuids[-1]):
        store.verify(uuids[-1], force=True)


def test_damaged_manifest_is_a_problem_not_a_checkpoint(store, root):
    uuids = three_checkpoints(store)
    flip_byte(root / uuids[-1] / MANIFEST, 40)
    reader = fresh_store(root)
    listed, problems = reader.scan()
    assert [m.uuid for m in listed] == uuids[:2]
    assert [p.uuid for p in problems] == [uuids[-1]] and uuids[-1] in problems[0].reason
    with pytest.raises(CorruptCheckpoint, match=uuids[-1]):
        reader.verify(uuids[-1])
    assert reader.newest_good().uuid == uuids[1]


def test_manifest_copied_into_another_directory_is_corrupt(store, root):
    m = commit_files(store, {"f": b"1"}, 1)
    other = manifest_mod.new_uuid()
    os.rename(root / m.uuid, root / other)
    with pytest.raises(CorruptCheckpoint, match=f"directory is {other}"):
        fresh_store(root).manifest(other)
    assert fresh_store(root).list() == []


def reseal_on_disk(path: Path, edit) -> None:
    """Hand-edit a manifest and recompute its self-checksum, so only validation can catch the edit."""
    body = json.loads(path.read_bytes())
    body.pop("manifest_crc32c")
    edit(body)
    body["manifest_crc32c"] = manifest_mod._body_crc(body)
    path.write_bytes(json.dumps(body).encode())


@pytest.mark.parametrize("bad_path", ["../x", "/etc/passwd", "a/../../b", "sub\\..\\..\\x", "..\\x"])
def test_hand_edited_manifest_with_an_unsafe_path_is_refused(store, root, bad_path):
    uuids = three_checkpoints(store)
    reseal_on_disk(root / uuids[-1] / MANIFEST, lambda b: b["files"][0].update(path=bad_path))
    reader = fresh_store(root)
    with pytest.raises(UnsafePathError, match=uuids[-1]):
        reader.manifest(uuids[-1])
    with pytest.raises(UnsafePathError):
        reader.verify(uuids[-1])
    assert reader.newest_good().uuid == uuids[1]
    # An invalid manifest makes the directory a "problem" of scan(), not a listed checkpoint
    # (newest_good() does not pass it to on_corrupt: only listed checkpoints are verified).
    listed, problems = reader.scan()
    assert uuids[-1] not in {m.uuid for m in listed} and [p.uuid for p in problems] == [uuids[-1]]


def test_resealed_manifest_with_a_wrong_size_fails_verification(store, root):
    uuids = three_checkpoints(store)
    reseal_on_disk(root / uuids[-1] / MANIFEST, lambda b: b["files"][0].update(size=b["files"][0]["size"] + 1))
    with pytest.raises(CorruptCheckpoint, match="the manifest says"):
        fresh_store(root).verify(uuids[-1])


@pytest.mark.parametrize("uuid", [manifest_mod.new_uuid(), "nope", "../etc", "a/b", ".tmp-x", "", None, 5])
def test_unknown_checkpoint_id_raises_checkpoint_not_found(store, uuid):
    three_checkpoints(store)
    with pytest.raises(CheckpointNotFound):
        store.manifest(uuid)
    with pytest.raises(CheckpointNotFound):
        store.verify(uuid)
    with pytest.raises(CheckpointNotFound):
        store.delete(uuid)
    assert len(store.list()) == 3


def test_symlink_pointing_outside_a_committed_checkpoint_is_refused_on_verify(store, root, tmp_path):
    uuids = three_checkpoints(store)
    target = root / uuids[-1] / "model.bin"
    outside = tmp_path / "outside.bin"
    outside.write_bytes(target.read_bytes())  # same bytes: only the link check can refuse it
    target.unlink()
    target.symlink_to(outside)
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match="symbolic link"):
        reader.verify(uuids[-1])
    assert reader.newest_good().uuid == uuids[1]


def test_symlinked_directory_inside_a_committed_checkpoint_is_refused_on_verify(store, root, tmp_path):
    uuids = three_checkpoints(store)
    sub = root / uuids[-1] / "sub"
    outside = tmp_path / "outside-dir"
    os.rename(sub, outside)  # identical content, now outside the checkpoint
    sub.symlink_to(outside, target_is_directory=True)
    with pytest.raises(CorruptCheckpoint, match="sub/opt.bin is a symbolic link"):
        fresh_store(root).verify(uuids[-1])


def test_symlinked_manifest_is_corrupt_and_does_not_hide_the_others(store, root, tmp_path):
    # Regression: this raised StorageError (ELOOP) out of scan(), list() and newest_good().
    uuids = three_checkpoints(store)
    manifest_path = root / uuids[-1] / MANIFEST
    outside = tmp_path / "outside.json"
    os.rename(manifest_path, outside)
    manifest_path.symlink_to(outside)
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match=f"{uuids[-1]}.*symbolic link"):
        reader.manifest(uuids[-1])
    listed, problems = reader.scan()
    assert [m.uuid for m in listed] == uuids[:2] and [p.uuid for p in problems] == [uuids[-1]]
    assert reader.newest_good().uuid == uuids[1]


def test_manifest_that_is_a_folder_is_corrupt(store, root):
    # Regression: IsADirectoryError escaped from scan().
    uuids = three_checkpoints(store)
    (root / uuids[-1] / MANIFEST).unlink()
    (root / uuids[-1] / MANIFEST).mkdir()
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match=uuids[-1]):
        reader.manifest(uuids[-1])
    assert reader.newest_good().uuid == uuids[1]


def test_a_plain_file_named_like_a_checkpoint_is_not_one(store, root):
    three_checkpoints(store)
    name = manifest_mod.new_uuid()
    (root / name).write_bytes(b"not a folder")
    with pytest.raises(CheckpointNotFound):
        store.manifest(name)
    assert len(store.list()) == 3 and store.scan()[1] == []


def test_symlinked_state_file_is_refused_on_restore(store, root, tmp_path):
    uuid = save(store, State(a=np.arange(3), rng=False), 1)
    target = root / uuid / "tensors.safetensors"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(CorruptCheckpoint, match=uuid):
        restore(fresh_store(root), State(a=None, rng=False), uuid)


# -- deletion and stale staging ---------------------------------------------------------------

def test_delete(store, root):
    uuids = three_checkpoints(store)
    store.delete(uuids[0])
    assert [m.uuid for m in store.list()] == uuids[1:]
    assert visible(root) == sorted(uuids[1:])
    with pytest.raises(CheckpointNotFound):
        store.manifest(uuids[0])
    with pytest.raises(CheckpointNotFound):
        store.delete(uuids[0])


def test_clean_stale_removes_dead_writers_but_not_this_process(store, root):
    mine = store.begin(1)
    (mine.path / "f").write_bytes(b"in progress")
    dead = root / f".tmp-{manifest_mod.new_uuid()}-{socket.gethostname()}-{dead_pid()}"
    dead.mkdir()
    (dead / "f").write_bytes(b"abandoned")
    assert store.clean_stale() == [dead.name]
    assert not dead.exists() and mine.path.exists()
    m = store.commit(mine)
    assert store.verify(m.uuid).uuid == m.uuid


# -- a full disk ------------------------------------------------------------------------------

def test_a_save_that_does_not_fit_leaves_every_earlier_checkpoint_intact(small_disk):
    root = small_disk / "ckpts"
    store = CheckpointStore(LocalStorage(root))
    small = [State(w=np.full(20_000, i, dtype=np.float32), step=i, rng=False) for i in (1, 2)]  # 80 kB each
    uuids = [save(store, s, s.step) for s in small]
    big = State(w=np.ones(1_000_000, dtype=np.float32), step=3, rng=False)  # 4 MB on a 2 MiB disk

    with pytest.raises(StorageError) as info:
        save(store, big, 3)
    assert info.value.errno == errno.ENOSPC
    assert "disk is full" in str(info.value)
    assert isinstance(info.value, OSError)

    assert visible(root) == sorted(uuids)  # no new checkpoint and no staging directory
    reader = fresh_store(root)
    assert [m.uuid for m in reader.list()] == uuids
    assert reader.newest_good().uuid == uuids[-1]
    for uuid, original in zip(uuids, small):
        assert reader.verify(uuid, force=True).uuid == uuid
        target = State(w=None, step=None, rng=False)
        restore(reader, target, uuid)
        assert target.step == original.step and target.w.tobytes() == original.w.tobytes()
    # Space was given back: a save that fits still works afterwards.
    assert save(store, State(w=np.zeros(10), step=4, rng=False), 4) in {m.uuid for m in fresh_store(root).list()}


def test_a_full_disk_while_writing_the_manifest_commits_nothing(small_disk):
    root = small_disk / "ckpts"
    store = CheckpointStore(LocalStorage(root))
    first = commit_files(store, {"f": b"first"}, 1)
    pending = store.begin(2)
    with open(pending.path / "fill.bin", "wb") as f:  # exactly the free space: the data fits
        f.write(b"\1" * free_bytes(small_disk))
    assert free_bytes(small_disk) == 0
    with pytest.raises(StorageError) as info:
        store.commit(pending)
    assert info.value.errno == errno.ENOSPC and "disk is full" in str(info.value)
    assert visible(root) == [first.uuid]
    assert fresh_store(root).verify(first.uuid) == first


# -- cost: the catalog does not grow per save --------------------------------------------------

def _manifest_reads_per_save(root: Path, kept: int) -> int:
    """Commit ``kept`` checkpoints with keep_all, then count manifests read by one more save + retention."""
    from unbroken.checkpoint import keep_latest

    writer = CheckpointStore(LocalStorage(root))
    for i in range(kept):
        commit_files(writer, {"f": b"x"}, i)
    store = fresh_store(root)  # a new process: it learns the folder once
    store.list()
    before = store.manifest_reads
    commit_files(store, {"f": b"y"}, kept)
    store.apply_retention(keep_latest(kept + 1))
    store.newest_good()
    return store.manifest_reads - before


def test_saving_with_1000_kept_checkpoints_reads_no_more_manifests_than_with_10(tmp_path):
    with_10 = _manifest_reads_per_save(tmp_path / "ten", 10)
    with_1000 = _manifest_reads_per_save(tmp_path / "thousand", 1000)
    assert with_1000 == with_10 <= 1


def test_a_checkpoint_another_writer_added_is_seen_after_its_folder_changed(tmp_path, monkeypatch):
    import unbroken.checkpoint.store.catalog as catalog

    monkeypatch.setattr(catalog, "_SETTLE_SECONDS", 0.0)  # trust the folder's mtime at once
    store = CheckpointStore(LocalStorage(tmp_path))
    commit_files(store, {"f": b"1"}, 1)
    assert len(store.list()) == 1
    other = commit_files(fresh_store(tmp_path), {"f": b"2"}, 2)  # another process
    assert [m.uuid for m in store.list()][-1] == other.uuid
    fresh_store(tmp_path).delete(other.uuid)  # gc elsewhere
    assert other.uuid not in {m.uuid for m in store.list()}


# -- newer formats and special files in place of a manifest -----------------------------------

def test_a_checkpoint_of_a_newer_format_is_listed_as_a_problem_but_never_called_corrupt(store, root):
    import json as json_mod

    from unbroken.checkpoint.format.manifest import READABLE_VERSION

    uuids = three_checkpoints(store)
    path = root / uuids[-1] / MANIFEST
    body = json_mod.loads(path.read_bytes())
    body.pop("manifest_crc32c")
    body["format_version"] = READABLE_VERSION + 1
    body["manifest_crc32c"] = manifest_mod._body_crc(body)
    path.write_bytes(json_mod.dumps(body).encode())
    reader = fresh_store(root)
    listed, problems = reader.scan()
    assert [m.uuid for m in listed] == uuids[:2]
    assert [(p.uuid, p.newer) for p in problems] == [(uuids[-1], True)] and "upgrade" in problems[0].reason
    assert uuids[-1] not in reader.corrupt
    reported = []
    assert reader.newest_good(on_corrupt=lambda u, r: reported.append(u)).uuid == uuids[1] and reported == []


@pytest.mark.timeout(20)
def test_a_fifo_in_place_of_the_manifest_is_corrupt_not_a_hang(store, root):
    uuids = three_checkpoints(store)
    (root / uuids[-1] / MANIFEST).unlink()
    os.mkfifo(root / uuids[-1] / MANIFEST)
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match="not a regular file"):
        reader.manifest(uuids[-1])
    assert reader.newest_good().uuid == uuids[1]
