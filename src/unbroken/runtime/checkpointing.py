"""The Determined-style checkpoint API of a run: ``run.checkpoint``.

Any framework, any files::

    with run.checkpoint.store_path({"steps_completed": step}) as (path, uuid):
        torch.save(model.state_dict(), path / "model.pt")
    with run.checkpoint.restore_path(run.checkpoint.latest_checkpoint) as path:
        model.load_state_dict(torch.load(path / "model.pt"))

Every commit is recorded in the tracking index and followed by the retention policy.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..checkpoint import CheckpointStore, Manifest, PendingCheckpoint, RetentionPolicy
from ..checkpoint.format.manifest import FileEntry
from ..checkpoint.store.retention import to_delete
from ..config import MANIFEST_NAME
from ..errors import CheckpointNotFound, ConfigError, CorruptCheckpointWarning, NotFound, TrackingError
from ..tracking import Tracker

log = logging.getLogger("unbroken")


class CheckpointContext:
    """Store, find, restore and delete the checkpoints of one trial."""

    def __init__(self, store: CheckpointStore, tracker: Tracker | None, trial_id: int | None,
                 attempt_id: int | None, retention: RetentionPolicy):
        self.store = store
        self._tracker, self._trial_id, self._attempt_id = tracker, trial_id, attempt_id
        self.retention = retention
        self.protected: set[str] = set()  # never deleted by retention (e.g. the restored checkpoint)
        self.corrupt: dict[str, str] = {}

    # -- Determined-style API ----------------------------------------------------------------
    @contextlib.contextmanager
    def store_path(self, metadata: dict[str, Any]) -> Iterator[tuple[Path, str]]:
        """Yield ``(path, uuid)``: write files under ``path``; they are committed when the block ends.

        ``metadata`` must hold ``steps_completed`` (int). If the block raises, nothing is saved.
        """
        steps = _steps_of(metadata)
        pending = self.store.begin()
        try:
            yield pending.path, pending.uuid
        except BaseException:
            self.store.abort(pending)
            raise
        self.commit(pending, steps, metadata)

    @contextlib.contextmanager
    def restore_path(self, checkpoint: str | None, *, verify: bool = True) -> Iterator[Path]:
        """Yield the local directory of a checkpoint after verifying every file. Do not modify it."""
        if checkpoint is None:
            raise CheckpointNotFound("no checkpoint to restore (latest_checkpoint is None on a fresh trial)")
        if verify:
            self.store.verify(checkpoint)
        else:
            self.store.manifest(checkpoint)
        local = self.store.local_path(checkpoint)
        if local is not None:
            yield local
            return
        with _temporary_dir() as tmp:
            yield self.store.storage.download(checkpoint, tmp)

    def upload(self, src: str | Path, metadata: dict[str, Any]) -> str:
        """Copy an existing directory into a new checkpoint; return its uuid."""
        src = Path(src)
        if not src.is_dir():
            raise ConfigError(f"cannot upload {src}: not a directory")
        with self.store_path(metadata) as (path, uuid):
            shutil.copytree(src, path, symlinks=True, dirs_exist_ok=True)
        return uuid

    def download(self, checkpoint: str, dest: str | Path) -> Path:
        """Verify a checkpoint and copy its files (and manifest) into ``dest``."""
        dest = Path(dest)
        manifest = self.store.verify(checkpoint)
        with self.restore_path(checkpoint, verify=False) as path:
            for entry in [*manifest.files, FileEntry(MANIFEST_NAME, 0, "00000000")]:
                target = dest / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path / entry.path, target, follow_symlinks=False)
        return dest

    def get_metadata(self, checkpoint: str) -> dict[str, Any]:
        """The user metadata of a checkpoint, with ``steps_completed`` and ``uuid``."""
        manifest = self.store.manifest(checkpoint)
        return {**manifest.metadata, "steps_completed": manifest.steps_completed, "uuid": manifest.uuid}

    def delete(self, checkpoint: str) -> None:
        """Delete a checkpoint from storage and mark it deleted in the index."""
        self.store.delete(checkpoint)
        self._index("mark_checkpoint", checkpoint, "deleted")

    @property
    def latest_checkpoint(self) -> str | None:
        """The uuid of the newest checkpoint whose files verify, or None."""
        manifest = self.newest_good()
        return manifest.uuid if manifest else None

    def list(self) -> list[Manifest]:
        """Committed checkpoints, oldest first."""
        return self.store.list()

    # -- used by Run -------------------------------------------------------------------------
    def newest_good(self) -> Manifest | None:
        self.report_unreadable()
        return self.store.newest_good(on_corrupt=self.report_corrupt, exclude=set(self.corrupt))

    def candidates(self) -> Iterator[Manifest]:
        """Committed checkpoints not known to be corrupt, newest first; unreadable ones are reported."""
        self.report_unreadable()
        return self.store.candidates(exclude=set(self.corrupt))

    def report_unreadable(self) -> None:
        """Warn once about each checkpoint directory whose manifest is missing or invalid."""
        for problem in self.store.scan()[1]:
            if problem.uuid not in self.corrupt:
                self.report_corrupt(problem.uuid, problem.reason)

    def commit(self, pending: PendingCheckpoint, steps_completed: int, metadata: dict[str, Any],
               *, known: dict[str, FileEntry] | None = None, needs_pickle: bool = False) -> Manifest:
        """Commit a pending checkpoint, record it, then apply retention."""
        manifest = self.store.commit(pending, steps_completed, metadata, known=known, needs_pickle=needs_pickle)
        self._record(manifest)
        self.apply_retention(keep={manifest.uuid})
        return manifest

    def apply_retention(self, keep: set[str] = frozenset()) -> list[str]:
        """Delete what the retention policy lets go; never protected ones or ``keep``."""
        good = [m for m in self.store.list() if m.uuid not in self.corrupt]
        newest = {good[-1].uuid} if good else set()
        deleted = []
        for manifest in to_delete(self.retention, good, self.protected | set(keep) | newest):
            try:
                self.delete(manifest.uuid)
                deleted.append(manifest.uuid)
            except Exception as exc:  # noqa: BLE001 - a failed cleanup must not fail the save
                log.warning("unbroken: retention could not delete checkpoint %s: %s", manifest.uuid, exc)
        return deleted

    def report_corrupt(self, uuid: str, reason: str) -> None:
        """Warn about a checkpoint that failed verification and mark it corrupt in the index."""
        self.corrupt[uuid] = reason
        warnings.warn(f"skipping corrupt checkpoint {uuid}: {reason}", CorruptCheckpointWarning, stacklevel=3)
        log.warning("unbroken: skipping corrupt checkpoint %s: %s", uuid, reason)
        if self._tracker is None:
            return
        try:
            self._tracker.checkpoint(uuid)
        except NotFound:
            with contextlib.suppress(CheckpointNotFound, Exception):
                self._record(self.store.manifest(uuid), attempt=False)
        self._index("mark_checkpoint", uuid, "corrupt", reason)

    def _record(self, manifest: Manifest, attempt: bool = True) -> None:
        self._index("record_checkpoint", self._trial_id, manifest.uuid, manifest.steps_completed,
                    created_at=manifest.created_at, size_bytes=manifest.size, metadata=manifest.metadata,
                    attempt_id=self._attempt_id if attempt else None)

    def _index(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Write to the tracking index; a failure there is logged, never fatal to a checkpoint."""
        if self._tracker is None or self._trial_id is None:
            return
        try:
            getattr(self._tracker, method)(*args, **kwargs)
        except TrackingError as exc:
            log.warning("unbroken: could not update the tracking index (%s): %s", method, exc)


def _steps_of(metadata: Any) -> int:
    if not isinstance(metadata, dict) or "steps_completed" not in metadata:
        raise ConfigError(
            "store_path(metadata) needs metadata with 'steps_completed' (an int): "
            "store_path({'steps_completed': step})"
        )
    steps = metadata["steps_completed"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"metadata['steps_completed'] must be a non-negative int, not {steps!r}")
    return steps


@contextlib.contextmanager
def _temporary_dir() -> Iterator[Path]:
    import tempfile
    with tempfile.TemporaryDirectory(prefix="unbroken-restore-") as tmp:
        yield Path(tmp)
