"""Saving States into a checkpoint store: synchronously, or snapshot now and persist in the background.

``Saver.save(state, steps, wait=False)`` validates the request and blocks the caller only for
a snapshot (every tensor copied into one reusable host buffer laid out like the tensor file,
the JSON tree encoded); a background thread writes the files (checksummed and fsynced as they
are written) and hands the pending checkpoint to :meth:`CheckpointStore.commit`, which writes
the manifest last and publishes it atomically, then tells the store's listeners (the index,
retention). At most one save is in flight: the next save first waits for it.

A background failure is never lost: it is raised as
:class:`~unbroken.errors.BackgroundSaveError` (cause chained) by the next :meth:`Saver.save`,
:meth:`Saver.check` or :meth:`Saver.wait`, once. A failed save leaves nothing visible, and
earlier checkpoints are untouched (the store commits atomically).

``wait=True`` writes in the caller's thread and returns once committed.

Incremental saves (``incremental=True``, or ``UNBROKEN_INCREMENTAL=1``): an asynchronous save
to local storage writes only the tensors whose bytes changed since the previous asynchronous
save committed by this saver -- or, for the first save after ``prepare(state, restored=...)``,
since the restored checkpoint (see :mod:`.resume`); the others are referred to in the files that
hold them (see :mod:`.incremental`). Synchronous saves, uploads to object stores, the first save
of a process that restored nothing, and the save after a failed one are always complete.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

from ..format import manifest as manifest_mod
from ..format.manifest import Manifest
from ..io.snapshot import Snapshot, Snapshotter
from ..io.writer import BackgroundWriter, SaveHandle
from ..store.catalog import CheckpointStore
from ..store.pending import PendingCheckpoint, check_metadata, check_steps
from . import incremental as incremental_mod
from . import resume
from . import statefile
from .state import State


class Saver:
    """Saves States into ``store``; see the module docstring.

    ``on_committed(handle)`` runs on the writer thread after each asynchronous commit (and
    in the caller after a synchronous one); it must be quick and thread-safe.
    """

    def __init__(self, store: CheckpointStore, *, on_committed: Callable[[SaveHandle], None] | None = None,
                 incremental: bool | None = None):
        self.store = store
        self.incremental = incremental_mod.enabled() if incremental is None else bool(incremental)
        self._on_committed = on_committed
        self._snapshots = Snapshotter()
        self._writer = BackgroundWriter()
        self._lineage: incremental_mod.Lineage | None = None  # of the last async commit; set by the writer
        self._seeded: incremental_mod.Lineage | None = None  # of a restored checkpoint; set by the reserve thread

    # -- saving --------------------------------------------------------------------------------
    def save(self, state: State, steps_completed: int, metadata: dict[str, Any] | None = None, *,
             wait: bool = False, uuid: str | None = None) -> SaveHandle:
        """Checkpoint ``state``; return its handle (its ``uuid`` is final at once).

        Raises ConfigError for a bad request before anything is written, and
        BackgroundSaveError first if an earlier background save failed. With ``wait=False``
        it returns after the snapshot; ``handle.wait()`` or :meth:`wait` returns once committed.
        """
        t0 = time.monotonic()
        steps_completed, metadata = check_steps(steps_completed), check_metadata(metadata)
        waited = self._writer.wait()
        self.check()
        tree, tensors, used_pickle = statefile.capture(state)
        handle = SaveHandle(uuid or manifest_mod.new_uuid(), steps_completed)
        handle.started, handle.wait_s = t0, waited
        self._snapshots.wait_reserved()  # a seed of prepare() may still be reading
        lineage, self._lineage, self._seeded = self._seeded or self._lineage, None, None  # valid again once committed
        if wait and self._writes_locally:
            pending = self.store.begin(steps_completed, metadata, uuid=handle.uuid)
            handle.manifest = self._persist(handle, pending, lambda path: statefile.write(path, tree, tensors, used_pickle))
            handle.stall_s = time.monotonic() - t0
            handle._finish(manifest=handle.manifest)
            return handle
        compare = lineage is not None and not wait and self._writes_locally
        snapshot = self._snapshots.take(tree, tensors, used_pickle, compare=compare)
        if wait:  # an object store: the snapshot goes up from the caller's thread
            handle.manifest = self._persist_snapshot(handle, snapshot, metadata)
            handle.stall_s = time.monotonic() - t0
            handle._finish(manifest=handle.manifest)
            return handle
        handle.nbytes = snapshot.nbytes
        handle.stall_s = time.monotonic() - t0
        self._writer.start(handle, lambda: self._persist_snapshot(handle, snapshot, metadata, lineage))
        return handle

    def prepare(self, state: State, *, wait: bool = False, restored: Manifest | None = None) -> None:
        """Get the snapshot buffer for ``state`` ready on a background thread (call it early, e.g.
        after a restore), so the first asynchronous save does not stall on allocating it; with
        ``wait``, block until it is ready.

        ``restored``: the checkpoint of this store just restored into ``state``. With incremental
        saves to local storage, its files are read into that buffer (see :mod:`.resume`) so the
        first save writes only what changed since it. Training thread; blocks only with ``wait``.
        """
        _tree, tensors, _used_pickle = statefile.capture(state)
        seed = None
        if restored is not None and self.incremental and self._writes_locally:
            seed = resume.seeder(self.store, restored, tensors, functools.partial(setattr, self, "_seeded"))
        self._snapshots.reserve(tensors, seed)
        if wait:
            self._snapshots.wait_reserved()

    def check(self) -> None:
        """Raise BackgroundSaveError if a background save failed and nobody was told yet."""
        failed = self._writer.unreported_failure()
        if failed is not None:
            raise failed.failure() from failed.error

    def wait(self) -> float:
        """Wait until the save in flight (if any) is committed; return the seconds waited.

        Raises BackgroundSaveError if it (or an earlier unreported one) failed.
        """
        waited = self._writer.wait()
        self.check()
        return waited

    @property
    def in_flight(self) -> SaveHandle | None:
        """The save being written now, or None."""
        return self._writer.current if self._writer.busy() else None

    @property
    def buffer_bytes(self) -> int:
        """Host memory kept for snapshots between saves."""
        return self._snapshots.buffer_bytes

    def release_buffer(self) -> None:
        """Free the snapshot buffer (after waiting for the save in flight)."""
        self._writer.wait()
        self._snapshots.release()

    # -- persisting ----------------------------------------------------------------------------
    @property
    def _writes_locally(self) -> bool:
        """True when checkpoint files are written into a local folder (else uploaded as they are made)."""
        return self.store.storage.is_local

    def _persist_snapshot(self, handle: SaveHandle, snapshot: Snapshot, metadata: dict,
                          lineage: incremental_mod.Lineage | None = None) -> Manifest:
        """Write and commit ``snapshot`` (writer thread, or the caller's with ``wait``)."""
        pending = self.store.begin(handle.steps_completed, metadata, uuid=handle.uuid)
        if not self._writes_locally:
            put = functools.partial(self.store.storage.commit.put_staged, pending.path)
            return self._persist(handle, pending, lambda path: statefile.upload_snapshot(put, snapshot))
        if not self.incremental:
            return self._persist(handle, pending, lambda path: statefile.write_snapshot(path, snapshot))
        with incremental_mod.leased_plan(self.store, snapshot, lineage) as decided:
            manifest = self._persist(handle, pending, lambda path: statefile.write_snapshot(path, snapshot, decided))
        own = {f.path: f for f in manifest.files}.get(statefile.TENSORS_FILE)
        self._lineage = incremental_mod.after(snapshot.header, decided, manifest.uuid, own)
        return manifest

    def _persist(self, handle: SaveHandle, pending: PendingCheckpoint,
                 write: Callable[[Any], statefile.Written]) -> Manifest:
        try:
            written = write(pending.path)
        except BaseException:
            self.store.abort(pending)
            raise
        pending.add_written(written.entries, written.needs_pickle, written.refs)
        handle.bytes_written = written.bytes_written
        handle.nbytes = max(handle.nbytes, written.bytes_written)
        manifest = self.store.commit(pending)
        handle.save_s = time.monotonic() - handle.started
        if self._on_committed is not None:
            self._on_committed(handle)
        return manifest
