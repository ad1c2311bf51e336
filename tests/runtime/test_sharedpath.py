"""store_path(shard=True) on a group: one checkpoint for all ranks or none (ranks as threads of a fake group)."""

from __future__ import annotations

import pytest
from threadgroup import ThreadGroup, on_every_rank

from unbroken.checkpoint import CheckpointStore, keep_latest
from unbroken.errors import CheckpointError, ConfigError
from unbroken.runtime.checkpointing import CheckpointContext
from unbroken.storage import LocalStorage


def contexts(folder, size=2):
    store = CheckpointStore(LocalStorage(folder))
    group = ThreadGroup(size)
    return store, [CheckpointContext(CheckpointStore(LocalStorage(folder)) if r else store, None, keep_latest(5),
                                     group=group.rank(r)) for r in range(size)]


def store_rank_file(steps_of=lambda rank: 7, fail_on=None):
    def body(rank, ctx):
        with ctx.store_path({"steps_completed": steps_of(rank)}, shard=True) as (path, uuid):
            (path / f"rank-{rank}.bin").write_bytes(bytes([rank]) * 1000)
            if rank == fail_on:
                raise OSError("disk full")
        return uuid
    return body


def test_every_rank_writes_into_one_checkpoint_committed_once(tmp_path):
    store, ranks = contexts(tmp_path)
    uuids = on_every_rank(ranks, store_rank_file())
    assert uuids[0] == uuids[1] and isinstance(uuids[0], str)
    (manifest,) = store.list()
    assert sorted(f.path for f in manifest.files) == ["rank-0.bin", "rank-1.bin"]
    store.verify(manifest.uuid)


def test_a_rank_failing_in_its_block_commits_nothing_and_keeps_the_earlier_checkpoint(tmp_path):
    store, ranks = contexts(tmp_path)
    (earlier,) = {u for u in on_every_rank(ranks, store_rank_file())}
    results = on_every_rank(ranks, store_rank_file(steps_of=lambda r: 8, fail_on=1))
    assert isinstance(results[1], OSError)  # the failing rank gets its own error back
    assert isinstance(results[0], CheckpointError) and "rank 1" in str(results[0]) and "disk full" in str(results[0])
    assert [m.uuid for m in store.list()] == [earlier]
    store.verify(earlier)
    assert not [p for p in tmp_path.iterdir() if p.name != earlier and not p.name.startswith(".")]


def test_ranks_passing_different_steps_commit_nothing(tmp_path):
    store, ranks = contexts(tmp_path)
    results = on_every_rank(ranks, store_rank_file(steps_of=lambda rank: 10 + rank))
    assert all(isinstance(r, CheckpointError) and "different steps_completed" in str(r) for r in results)
    assert store.list() == []


def test_a_rank_other_than_0_may_not_store_alone(tmp_path):
    _store, ranks = contexts(tmp_path)
    with pytest.raises(ConfigError, match="shard=True"):
        with ranks[1].store_path({"steps_completed": 1}):
            pass


def test_upload_with_shard_merges_every_ranks_folder_and_none_adds_nothing(tmp_path):
    store, ranks = contexts(tmp_path / "ckpts")
    source = tmp_path / "rank0"
    source.mkdir()
    (source / "model.bin").write_bytes(b"weights")

    def body(rank, ctx):
        return ctx.upload(source if rank == 0 else None, {"steps_completed": 3}, shard=True)

    uuids = on_every_rank(ranks, body)
    assert uuids[0] == uuids[1]
    assert [f.path for f in store.list()[0].files] == ["model.bin"]
