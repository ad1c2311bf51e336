"""Incremental saves: unchanged tensors are referred to, never rewritten; restores, verification,
retention and deletion follow the references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ckpt_helpers import flip_byte, fresh_store

from unbroken.checkpoint import CheckpointStore, State
from unbroken.checkpoint.format import manifest as manifest_mod
from unbroken.checkpoint.saving import incremental, statefile
from unbroken.checkpoint.saving.saver import Saver
from unbroken.checkpoint.store.retention import keep_latest
from unbroken.errors import (BackgroundSaveError, CheckpointError, CorruptCheckpoint,
                             UnsupportedFormatVersion)
from unbroken.storage import LocalStorage

N = 64 << 10  # float64 elements per tensor: 512 KiB
HALF = {f"layer{i}" for i in range(4)}  # of 8 layers: enough of the first file stays in use to refer to it


def layers(seed: int, n: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer{i}": rng.standard_normal(N) for i in range(n)}


def train(weights: dict[str, np.ndarray], frozen: set[str], step: int) -> None:
    """Change every tensor not in ``frozen`` in place (as an optimizer step does)."""
    for name, w in weights.items():
        if name not in frozen:
            w += 0.001 * (step + 1)


def incremental_saves(store: CheckpointStore, weights: dict, frozen: set[str], steps: int):
    """Save ``steps`` times asynchronously with training in between; return handles and copies."""
    saver = Saver(store, incremental=True)
    state = State(weights=weights, rng=False)
    handles, copies = [], []
    for step in range(steps):
        handles.append(saver.save(state, step + 1))
        copies.append({k: v.copy() for k, v in weights.items()})
        saver.wait()
        train(weights, frozen, step)
    return saver, handles, copies


def restore_into(root: Path, uuid: str, n: int = 8) -> dict[str, np.ndarray]:
    store = fresh_store(root)
    target = State(weights={k: np.zeros(N) for k in layers(0, n)}, rng=False)
    statefile.restore(target, store.local_path(uuid), store.manifest(uuid))
    return target.weights


def test_unchanged_tensors_are_referred_to_and_restore_bitwise_equal(store, root):
    frozen = {f"layer{i}" for i in range(4)}
    _saver, handles, copies = incremental_saves(store, layers(0), frozen, 3)
    manifests = [h.wait() for h in handles]
    assert not manifests[0].refs and manifests[0].format_version == manifest_mod.PLAIN_FORMAT_VERSION
    for m in manifests[1:]:
        assert m.format_version == manifest_mod.REFS_FORMAT_VERSION
        # Flat references: every frozen tensor comes from the first (full) checkpoint's own file.
        assert [(r.uuid, set(r.tensors)) for r in m.refs] == [(manifests[0].uuid, {f"weights/{n}" for n in frozen})]
    for handle, expected in zip(handles, copies):
        restored = restore_into(root, handle.uuid)
        for name, value in expected.items():
            assert restored[name].tobytes() == value.tobytes(), name
    assert fresh_store(root).verify(handles[-1].uuid, force=True).uuid == handles[-1].uuid


def test_a_half_frozen_model_writes_about_half_the_bytes(store):
    _saver, handles, _ = incremental_saves(store, layers(1), {f"layer{i}" for i in range(4)}, 3)
    first, *later = handles
    assert first.bytes_written == first.nbytes
    for h in later:
        assert h.nbytes == first.nbytes
        assert 0.45 < h.bytes_written / h.nbytes < 0.55, (h.bytes_written, h.nbytes)


def test_nothing_changed_writes_no_tensor_file(store, root):
    _saver, handles, copies = incremental_saves(store, layers(2), set(layers(2)), 2)
    second = handles[1].wait()
    assert [f.path for f in second.files] == [statefile.STATE_JSON]
    restored = restore_into(root, second.uuid)
    assert all(restored[k].tobytes() == v.tobytes() for k, v in copies[1].items())


def test_a_bitwise_change_that_compares_equal_is_still_written(store, root):
    weights = {"w": np.zeros(N), "frozen": np.ones(N)}
    saver = Saver(store, incremental=True)
    state = State(weights=weights, rng=False)
    saver.save(state, 1).wait()
    weights["w"][:] = -0.0  # == 0.0 as a number, different bytes
    manifest = saver.save(state, 2).wait()
    assert [set(r.tensors) for r in manifest.refs] == [{"weights/frozen"}]
    target = State(weights={"w": np.ones(N), "frozen": np.zeros(N)}, rng=False)
    statefile.restore(target, store.local_path(manifest.uuid), manifest)
    assert np.signbit(target.weights["w"]).all()


def test_incremental_is_off_unless_asked(store, monkeypatch):
    monkeypatch.delenv(incremental.ENV_INCREMENTAL, raising=False)
    saver = Saver(store)
    state = State(weights=layers(3), rng=False)
    saver.save(state, 1).wait()
    assert not saver.save(state, 2).wait().refs
    monkeypatch.setenv(incremental.ENV_INCREMENTAL, "1")
    assert Saver(store).incremental


def test_references_survive_retention_and_are_released_when_unused(store, root):
    weights = layers(4)
    frozen = {f"layer{i}" for i in range(4)}
    saver, handles, _ = incremental_saves(store, weights, frozen, 3)
    base = handles[0].uuid
    deleted = store.apply_retention(keep_latest(1))
    assert deleted == [handles[1].uuid]  # the base stays: the newest refers to it
    assert {m.uuid for m in store.list()} == {base, handles[2].uuid}
    assert restore_into(root, handles[2].uuid)["layer0"].tobytes() == weights["layer0"].tobytes()
    newest = saver.save(State(weights=weights, rng=False), 10, wait=True).wait()  # synchronous: complete
    assert not newest.refs
    assert set(store.apply_retention(keep_latest(1))) == {base, handles[2].uuid}
    assert [m.uuid for m in store.list()] == [newest.uuid]


def test_delete_and_gc_refuse_a_referenced_checkpoint_in_any_process(store, root):
    _saver, handles, _ = incremental_saves(store, layers(5), HALF, 2)
    base, user = handles[0].uuid, handles[1].uuid
    other = fresh_store(root)  # another process: knows the references from the manifests it reads
    with pytest.raises(CheckpointError, match="later checkpoint"):
        other.delete(base)
    assert not other.try_delete(base) and not store.try_delete(base)
    assert other.referrers(base) == [user]
    other.delete(user)
    other.delete(base)
    assert other.list() == []


def test_a_corrupt_referenced_file_fails_every_checkpoint_that_uses_it_and_restore_falls_back(store, root):
    weights = layers(6)
    state = State(weights=weights, rng=False)
    saver = Saver(store, incremental=True)
    good = saver.save(state, 1, wait=True).wait()  # complete, independent
    train(weights, set(), 0)
    _s, handles, copies = incremental_saves(store, weights, HALF, 3)
    flip_byte(root / handles[0].uuid / statefile.TENSORS_FILE, 100)
    reader = fresh_store(root)
    for h in handles:
        with pytest.raises(CorruptCheckpoint, match=handles[0].uuid):
            reader.verify(h.uuid, force=True)
    restored_from = None
    for m in reader.candidates():  # the restore loop: newest first, skipping corrupt ones
        target = State(weights={k: np.zeros(N) for k in weights}, rng=False)
        try:
            statefile.restore(target, reader.local_path(m.uuid), m)
        except CorruptCheckpoint as exc:
            assert handles[0].uuid in str(exc)
            assert all(not v.any() for v in target.weights.values())  # untouched
            continue
        restored_from = m.uuid
        break
    assert restored_from == good.uuid


def test_a_missing_referenced_checkpoint_is_corrupt_not_gone(store, root):
    _saver, handles, _ = incremental_saves(store, layers(7), HALF, 2)
    LocalStorage(root).delete(handles[0].uuid)  # behind the catalog's back
    reader = fresh_store(root)
    with pytest.raises(CorruptCheckpoint, match="uses file"):
        reader.verify(handles[1].uuid)
    with pytest.raises(CorruptCheckpoint, match="deleted"):
        restore_into(root, handles[1].uuid)


def test_a_failed_save_makes_the_next_one_complete(store, monkeypatch):
    weights = layers(8)
    saver = Saver(store, incremental=True)
    state = State(weights=weights, rng=False)
    saver.save(state, 1).wait()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(statefile, "write_snapshot", broken)
        saver.save(state, 2)
        with pytest.raises(BackgroundSaveError):
            saver.wait()
    assert not saver.save(state, 3).wait().refs  # the buffer no longer matches a committed checkpoint
    assert saver.save(state, 4).wait().refs


def test_a_file_mostly_superseded_is_written_again(store, root, monkeypatch):
    monkeypatch.setattr(incremental, "MIN_LIVE_FRACTION", 0.3)
    weights = layers(9, n=4)
    frozen = {"layer0"}  # 1/4 of the first file stays in use: below 0.3, so not referred to
    _saver, handles, copies = incremental_saves(store, weights, frozen, 2)
    assert not handles[1].wait().refs and handles[1].bytes_written == handles[1].nbytes
    restored = restore_into(root, handles[1].uuid, n=4)
    assert restored["layer0"].tobytes() == copies[1]["layer0"].tobytes()


def test_an_old_reader_refuses_a_manifest_with_references(store, monkeypatch):
    _saver, handles, _ = incremental_saves(store, layers(10), HALF, 2)
    data = manifest_mod.Manifest.to_bytes(handles[1].wait())
    assert handles[1].wait().refs
    monkeypatch.setattr(manifest_mod, "READABLE_VERSION", manifest_mod.PLAIN_FORMAT_VERSION)
    with pytest.raises(UnsupportedFormatVersion):
        manifest_mod.parse(data)


# -- after a restart: the restored checkpoint seeds the first save (resume.py) ---------------------

def resumed(root: Path, uuid: str, n: int = 8) -> tuple[Saver, State]:
    """A new process: a new store and saver, a State restored from ``uuid``, the saver prepared from it."""
    store = fresh_store(root)
    state = State(weights={k: np.zeros(N) for k in layers(0, n)}, rng=False)
    manifest = store.manifest(uuid)
    statefile.restore(state, store.local_path(uuid), manifest)
    saver = Saver(store, incremental=True)
    saver.prepare(state, wait=True, restored=manifest)
    return saver, state


def test_the_first_save_after_a_restore_refers_to_the_restored_files(store, root):
    _saver, handles, _ = incremental_saves(store, layers(11), HALF, 1)
    base = handles[0].wait()
    saver, state = resumed(root, base.uuid)
    train(state.weights, HALF, 0)
    expected = {k: v.copy() for k, v in state.weights.items()}
    first = saver.save(state, 2)
    manifest = first.wait()
    assert [(r.uuid, set(r.tensors)) for r in manifest.refs] == [(base.uuid, {f"weights/{n}" for n in HALF})]
    assert 0.45 < first.bytes_written / first.nbytes < 0.55
    restored = restore_into(root, manifest.uuid)
    assert all(restored[k].tobytes() == v.tobytes() for k, v in expected.items())
    train(state.weights, HALF, 1)
    assert saver.save(state, 3).wait().refs == manifest.refs  # and the lineage goes on from there


def test_resuming_an_incremental_checkpoint_refers_to_the_files_it_used(store, root):
    weights = layers(12)
    _saver, handles, _ = incremental_saves(store, weights, HALF, 2)
    base, newest = handles[0].uuid, handles[1].wait()
    saver, state = resumed(root, newest.uuid)
    changed = "layer7"
    state.weights[changed] += 1.0  # the others equal the restored checkpoint
    manifest = saver.save(state, 3).wait()
    used = {r.uuid: set(r.tensors) for r in manifest.refs}
    assert used == {base: {f"weights/{n}" for n in HALF},  # flat: the file that holds the bytes
                    newest.uuid: {f"weights/layer{i}" for i in range(4, 7)}}
    restored = restore_into(root, manifest.uuid)
    assert all(restored[k].tobytes() == v.tobytes() for k, v in state.weights.items())


def test_a_restored_file_damaged_before_the_seed_makes_the_first_save_complete(store, root):
    _saver, handles, _ = incremental_saves(store, layers(13), HALF, 1)
    base = handles[0].wait()
    reader = fresh_store(root)
    state = State(weights={k: np.zeros(N) for k in layers(0)}, rng=False)
    statefile.restore(state, reader.local_path(base.uuid), base)
    flip_byte(root / base.uuid / statefile.TENSORS_FILE, 4096)  # after the restore read it
    saver = Saver(reader, incremental=True)
    saver.prepare(state, wait=True, restored=base)
    first = saver.save(state, 2)
    assert not first.wait().refs and first.bytes_written == first.nbytes


def test_a_restored_checkpoint_deleted_before_the_first_save_is_not_referred_to(store, root):
    _saver, handles, _ = incremental_saves(store, layers(14), HALF, 1)
    base = handles[0].wait()
    saver, state = resumed(root, base.uuid)
    saver.store.delete(base.uuid)  # e.g. `unbroken gc` in another process, after the seed
    manifest = saver.save(state, 2).wait()
    assert not manifest.refs
    restored = restore_into(root, manifest.uuid)
    assert all(restored[k].tobytes() == v.tobytes() for k, v in state.weights.items())


def test_a_seed_is_compared_only_for_a_state_of_the_same_layout(store, root):
    _saver, handles, _ = incremental_saves(store, layers(15), HALF, 1)
    base = handles[0].wait()
    saver, state = resumed(root, base.uuid)
    state.weights["extra"] = np.zeros(16)  # the layout changed after the restore
    first = saver.save(state, 2)
    assert not first.wait().refs and first.bytes_written == first.nbytes
