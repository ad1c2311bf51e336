"""A run whose checkpoints live on S3 (a real SeaweedFS): async uploads, verified restores through
the cache, fallback past a damaged object, and an outage in the middle of a save."""

from __future__ import annotations

import numpy as np
import pytest

import unbroken
from unbroken.errors import BackgroundSaveError, CorruptCheckpointWarning
from unbroken.storage import open_storage


def _state(value: float = 0.0) -> unbroken.State:
    return unbroken.State(w=np.full(1 << 18, value, dtype=np.float32), step=0, rng=False)  # 1 MiB


def test_saves_upload_without_a_local_copy_and_restore_bitwise(home, s3_url, monkeypatch):
    monkeypatch.delenv("UNBROKEN_STORAGE")
    with unbroken.init("s3", home=home, storage=s3_url, keep=unbroken.keep_all()) as run:
        state = _state()
        for step in (1, 2, 3):
            state.w += 1
            state.step = step
            run.save(state, step)  # asynchronous: straight to the bucket
        run.wait_for_saves()
        trial_prefix = f"{s3_url}/experiments/s3/trial-1/checkpoints"
        assert sorted(m.steps_completed for m in run.checkpoint.list()) == [1, 2, 3]
    staging = home / "cache"
    assert not any(p.suffix == ".safetensors" for p in staging.rglob("*")), "a local copy was written"
    with unbroken.init("s3", home=home) as run:  # no storage given: the trial's recorded URL is used
        restored = _state(-1)
        assert run.restore(restored) == 3
        assert np.array_equal(restored.w, np.full(1 << 18, 3, dtype=np.float32)) and restored.step == 3
    assert open_storage(trial_prefix, cache_dir=home / "other-cache").names()


def test_a_damaged_object_is_caught_on_restore_and_the_previous_checkpoint_is_used(home, s3_url, monkeypatch):
    monkeypatch.delenv("UNBROKEN_STORAGE")
    with unbroken.init("s3", home=home, storage=s3_url, keep=unbroken.keep_all()) as run:
        state = _state()
        uuids = []
        for step in (1, 2):
            state.w += 1
            uuids.append(run.save(state, step, wait=True))
    storage = open_storage(f"{s3_url}/experiments/s3/trial-1/checkpoints", cache_dir=home / "x")
    data = bytearray(storage.read_bytes(uuids[-1], "tensors.safetensors"))
    data[len(data) // 2] ^= 0xFF
    storage.client.put(f"{uuids[-1]}/tensors.safetensors", bytes(data))  # bit rot in the bucket
    with pytest.warns(CorruptCheckpointWarning, match=uuids[-1]):
        with unbroken.init("s3", home=home) as run:
            restored = _state(-1)
            assert run.restore(restored) == 1
            assert restored.w[0] == 1


def test_an_outage_mid_save_fails_clearly_keeps_the_past_and_the_next_save_commits(home, tmp_path, monkeypatch):
    from s3server import start_server

    server = start_server(tmp_path / "own-s3")
    server.apply(monkeypatch)
    monkeypatch.delenv("UNBROKEN_STORAGE")
    url = server.fresh_url()
    try:
        with unbroken.init("out", home=home, storage=url, keep=unbroken.keep_all()) as run:
            state = unbroken.State(w=np.ones(16 << 20, dtype=np.float32), rng=False)  # 64 MiB: takes a while
            first = run.save(state, 1, wait=True)
            run.save(state, 2)  # in flight...
            server.stop()  # ...when the server goes away
            with pytest.raises(BackgroundSaveError, match=url.split("://")[1].split("/")[0]):
                run.wait_for_saves()
            server.start()
            state.w[:] = 3
            third = run.save(state, 3, wait=True)  # training went on; the server is back
            listed = {m.uuid: m.steps_completed for m in run.checkpoint.list()}
            assert listed == {first: 1, third: 3}
        with unbroken.init("out", home=home) as run:
            restored = unbroken.State(w=np.zeros(16 << 20, dtype=np.float32), rng=False)
            assert run.restore(restored) == 3 and restored.w[0] == 3
    finally:
        server.stop()
