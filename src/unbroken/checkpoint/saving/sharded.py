"""Sharded saves: every rank of a torch.distributed group writes its part of one checkpoint.

``ShardedSaver`` has the surface of :class:`~.saver.Saver`. Every rank calls :meth:`ShardedSaver.save`
at the same step (a collective):

1. training thread: each rank waits for its previous save; rank 0 stages the checkpoint (picks its
   uuid, creates the staged directory) and broadcasts both; each rank snapshots its parts
   (:mod:`.shards`) into its reusable host buffers and returns (the small stall of an async save);
2. writer thread: each rank writes its parts into the staged directory (fsynced, checksummed) and
   reports their entries (:mod:`unbroken.checkpoint.store.gather`); rank 0 then waits for every
   report and commits: the manifest is written only after every rank finished, so the checkpoint is
   committed for all ranks or for none; its listeners (index, retention) run on rank 0 only.

Threads and collectives: only step 1 calls a collective, on the training thread; the writer threads
exchange their reports through the staged directory, so no two threads of a rank ever call a
collective at once. On ranks other than 0 a save's handle is done when the rank's files are
durable, not when the checkpoint is committed; :meth:`ShardedSaver.wait_group` (a collective) waits
for the commit on every rank. ``wait=True`` saves end with it.

Limits: the staged directory must be visible to every rank (local storage on one machine, or a
shared POSIX filesystem); object stores and incremental saves are single-process only for now.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ...errors import BackgroundSaveError, CheckpointError, ConfigError
from ..format.manifest import Manifest
from ..io.snapshot import Snapshot, Snapshotter
from ..io.writer import BackgroundWriter, SaveHandle
from ..store import gather
from ..store.catalog import CheckpointStore
from ..store.pending import PendingCheckpoint, check_metadata, check_steps
from . import shards, statefile
from .state import State


class ShardedSaver:
    """Saves this rank's part of each checkpoint of a group; see the module docstring.

    ``group``: the run's distributed context (rank, size, broadcast). ``on_committed(handle)``
    runs on rank 0 only, on its writer thread, after each commit.
    """

    def __init__(self, store: CheckpointStore, group: Any, *,
                 on_committed: Callable[[SaveHandle], None] | None = None):
        if not store.storage.is_local:
            raise ConfigError("sharded checkpoints of a torch.distributed run need local (or shared POSIX) storage; "
                              f"{store.storage.location} is an object store")
        self.store, self.group = store, group
        self.incremental = False
        self._on_committed = on_committed
        self._snapshots: dict[str, Snapshotter] = {}
        self._writer = BackgroundWriter()

    # -- saving (training thread, every rank) ---------------------------------------------------
    def save(self, state: State, steps_completed: int, metadata: dict[str, Any] | None = None, *,
             wait: bool = False, uuid: str | None = None) -> SaveHandle:
        """Checkpoint this rank's part of ``state``; all ranks must call this at the same step.

        Blocks for the previous save of this rank, one broadcast and the snapshot; with ``wait``
        until the checkpoint is committed (or failed) on every rank. Raises ConfigError for a bad
        request, BackgroundSaveError for an earlier failed save of this rank.
        """
        t0 = time.monotonic()
        steps_completed, metadata = check_steps(steps_completed), check_metadata(metadata)
        waited = self._writer.wait()
        self.check()
        pending, uuid, staged = self._stage(steps_completed, metadata, uuid)
        snaps = [(folder, self._snapshot(folder, part)) for folder, part in shards.parts_to_write(state, self.group.rank)]
        handle = SaveHandle(uuid, steps_completed)
        handle.started, handle.wait_s = t0, waited
        handle.nbytes = sum(s.nbytes for _f, s in snaps)
        job = lambda: self._persist(handle, pending, staged, snaps)  # noqa: E731
        handle.stall_s = time.monotonic() - t0
        if wait:
            self._save_now(handle, job)
            return handle
        self._writer.start(handle, job)
        return handle

    def _stage(self, steps: int, metadata: dict, uuid: str | None) -> tuple[PendingCheckpoint | None, str, Path]:
        """Rank 0 stages the checkpoint; every rank learns where (a broadcast)."""
        pending, plan = None, None
        if self.group.is_chief:
            try:
                pending = self.store.begin(steps, metadata, uuid=uuid)
                plan = (pending.uuid, str(pending.path))
            except BaseException as exc:  # noqa: BLE001 - the others must hear of it, then it is raised
                self.group.broadcast(("", f"{type(exc).__name__}: {exc}"))
                raise
        plan = self.group.broadcast(plan)
        if not plan[0]:
            raise CheckpointError(f"rank 0 could not stage the checkpoint: {plan[1]}")
        return pending, plan[0], Path(plan[1])

    def _snapshot(self, folder: str, part: State) -> Snapshot:
        tree, tensors, used_pickle = statefile.capture(part)
        key = "replicated" if folder == shards.REPLICATED else "own"
        return self._snapshots.setdefault(key, Snapshotter()).take(tree, tensors, used_pickle)

    def _save_now(self, handle: SaveHandle, job: Callable[[], Manifest | None]) -> None:
        """Write (and on rank 0 commit) in this thread; then learn rank 0's verdict (a collective)."""
        error = None
        try:
            handle.manifest = job()
        except BaseException as exc:  # noqa: BLE001 - raised below, after the collective
            error = exc
        handle._finish(manifest=handle.manifest, error=error)
        handle.reported = True
        verdict = self.group.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if verdict is not None:
            raise CheckpointError(f"checkpoint {handle.uuid} was not committed: {verdict}")

    # -- persisting (writer thread, or the caller's with wait) ------------------------------------
    def _persist(self, handle: SaveHandle, pending: PendingCheckpoint | None, staged: Path,
                 snaps: list[tuple[str, Snapshot]]) -> Manifest | None:
        """Write this rank's parts and report them; on rank 0 collect every report and commit."""
        rank = self.group.rank
        try:
            entries, needs_pickle = self._write_parts(staged, snaps)
        except BaseException as exc:
            gather.report(staged, rank, None, error=f"{type(exc).__name__}: {exc}")
            if pending is not None:
                self.store.abort(pending)
            raise
        gather.report(staged, rank, entries, needs_pickle)
        handle.bytes_written = sum(e.size for e in entries.values())
        if pending is None:
            return None
        try:
            everything, any_pickle = gather.collect(staged, self.group.size)
        except BaseException:
            self.store.abort(pending)
            raise
        pending.add_written(everything, any_pickle)
        manifest = self.store.commit(pending)
        handle.save_s = time.monotonic() - handle.started
        if self._on_committed is not None:
            self._on_committed(handle)
        return manifest

    @staticmethod
    def _write_parts(staged: Path, snaps: list[tuple[str, Snapshot]]) -> tuple[dict, bool]:
        entries, needs_pickle = {}, False
        for folder, snapshot in snaps:
            (staged / folder).mkdir(parents=True, exist_ok=True)
            written = statefile.write_snapshot(staged / folder, snapshot)
            entries.update(shards.prefixed(written.entries, folder))
            needs_pickle = needs_pickle or written.needs_pickle
        return entries, needs_pickle

    # -- waiting -------------------------------------------------------------------------------
    def wait_group(self) -> None:
        """Wait until this rank's save in flight is written and rank 0 committed it. All ranks must call this.

        Raises BackgroundSaveError for this rank's failure, CheckpointError for rank 0's.
        """
        own = None
        try:
            self.wait()
        except BackgroundSaveError as exc:
            own = exc
        verdict = self.group.broadcast(None if own is None else str(own))
        if own is not None:
            raise own
        if verdict is not None:
            raise CheckpointError(f"rank 0's last save failed: {verdict}")

    def prepare(self, state: State, *, restored: Manifest | None = None) -> None:
        """Get this rank's own snapshot buffer ready in the background (after a restore).
        ``restored`` is accepted for the surface of :meth:`Saver.prepare` and not used: sharded
        saves are never incremental."""
        _tree, tensors, _pickle = statefile.capture(shards.parts_to_write(state, self.group.rank)[0][1])
        self._snapshots.setdefault("own", Snapshotter()).reserve(tensors)

    def check(self) -> None:
        """Raise BackgroundSaveError if this rank's background save failed and nobody was told yet."""
        failed = self._writer.unreported_failure()
        if failed is not None:
            raise failed.failure() from failed.error

    def wait(self) -> float:
        """Wait for this rank's save in flight (its files; on rank 0 the commit); seconds waited."""
        waited = self._writer.wait()
        self.check()
        return waited

    @property
    def in_flight(self) -> SaveHandle | None:
        return self._writer.current if self._writer.busy() else None

    @property
    def buffer_bytes(self) -> int:
        return sum(s.buffer_bytes for s in self._snapshots.values())

    def release_buffer(self) -> None:
        self._writer.wait()
        for snapshots in self._snapshots.values():
            snapshots.release()
