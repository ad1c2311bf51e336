"""Helpers of the checkpoint tests: save and restore a State the way the runtime does."""

from __future__ import annotations

import os
from pathlib import Path

from unbroken.checkpoint.saving import statefile
from unbroken.checkpoint import CheckpointStore, State
from unbroken.storage import LocalStorage


def save(store: CheckpointStore, state: State, steps: int, metadata: dict | None = None) -> str:
    """Capture, write into a pending checkpoint, commit; abort on any error (as Run.save does)."""
    tree, tensors, used_pickle = statefile.capture(state)
    pending = store.begin(steps, metadata)
    try:
        written = statefile.write(pending.path, tree, tensors, used_pickle)
    except BaseException:
        store.abort(pending)
        raise
    pending.add_written(written.entries, written.needs_pickle)
    return store.commit(pending).uuid


def restore(store: CheckpointStore, state: State, uuid: str | None = None, **kwargs) -> str:
    """Load checkpoint ``uuid`` (default: the newest good one) into ``state``; return its uuid."""
    manifest = store.manifest(uuid) if uuid else store.newest_good()
    assert manifest is not None, "no checkpoint to restore"
    statefile.restore(state, store.local_path(manifest.uuid), manifest, **kwargs)
    return manifest.uuid


def fresh_store(root: Path) -> CheckpointStore:
    """A new store on ``root``: nothing remembered (as after a restart)."""
    return CheckpointStore(LocalStorage(root))


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int | None = None) -> None:
    os.truncate(path, path.stat().st_size // 2 if size is None else size)
