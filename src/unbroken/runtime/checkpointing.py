"""The Determined-style checkpoint API of a run: ``run.checkpoint``.

Any framework, any files::

    with run.checkpoint.store_path({"steps_completed": step}) as (path, uuid):
        torch.save(model.state_dict(), path / "model.pt")
    latest = run.checkpoint.latest_checkpoint
    if latest is not None:
        with run.checkpoint.restore_path(latest) as path:
            model.load_state_dict(torch.load(path / "model.pt"))

Every commit (from here or from ``run.save``) is recorded in the tracking index and followed
by the retention policy, in the committing thread. A checkpoint inside a ``restore_path`` block
(or being restored by ``run.restore``) holds a read lease: no retention or ``gc``, in this or
any other process, deletes it before the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

from ..checkpoint import CheckpointStore, Manifest, RetentionPolicy
from ..config import MANIFEST_NAME
from ..errors import CheckpointNotFound, ConfigError, CorruptCheckpoint, CorruptCheckpointWarning
from .distributed import Distributed, SingleProcess
from .index import RunIndex
from .sharedpath import store_together

log = logging.getLogger("unbroken")


class CheckpointContext:
    """Store, find, restore and delete the checkpoints of one trial (``run.checkpoint``).

    Threads: the API is for the training thread; the commit hook runs in whichever thread
    commits (the background writer for asynchronous saves).
    """

    def __init__(self, store: CheckpointStore, index: RunIndex | None, retention: RetentionPolicy, *,
                 label: str = "trial", group: Distributed | None = None):
        self.store = store
        self.group = group or SingleProcess()
        self.retention = retention
        self._index = index
        self._label = label
        self._reported: set[str] = set()
        self._ours: set[str] = set()  # committed by this process: never a resume point
        store.on_committed(self._after_commit)

    # -- Determined-style API ----------------------------------------------------------------
    @contextlib.contextmanager
    def store_path(self, metadata: dict[str, Any], *, shard: bool = False) -> Iterator[tuple[Path, str]]:
        """Yield ``(path, uuid)``: write files under ``path``; they are committed when the block ends.

        ``metadata`` must hold ``steps_completed`` (an int in [0, 2**63)). If the block raises,
        nothing is saved. In a torch.distributed group, either rank 0 alone calls it
        (``shard=False``), or every rank does with ``shard=True`` (a collective): each writes its own
        files into the one checkpoint, which is committed only after every rank's block ended well
        (:mod:`.sharedpath`). With one process ``shard`` changes nothing.
        """
        steps = _steps_of(metadata)
        if self.group.size > 1 and shard:
            with store_together(self.store, self.group, steps, metadata) as staged:
                yield staged
            return
        if self.group.size > 1 and not self.group.is_chief:
            raise ConfigError(f"store_path on rank {self.group.rank}: with several ranks either rank 0 alone stores "
                              "(shard=False) or every rank calls store_path(metadata, shard=True)")
        pending = self.store.begin(steps, metadata)
        try:
            yield pending.path, pending.uuid
        except BaseException:
            self.store.abort(pending)
            raise
        self.store.commit(pending)

    @contextlib.contextmanager
    def restore_path(self, checkpoint: str | None, *, verify: bool = True) -> Iterator[Path]:
        """Yield the local directory of a checkpoint after verifying every file. Do not modify it.

        The checkpoint is leased for the block (see the module docstring). The first restore
        of an attempt from a checkpoint it did not write itself is recorded as its resume point.
        """
        if checkpoint is None:
            raise CheckpointNotFound("no checkpoint to restore: latest_checkpoint is None on a fresh trial "
                                     "(guard with `if latest is not None:`)")
        with self._reading(checkpoint, verify=verify) as (manifest, path):
            self.record_restore(manifest)
            yield path

    @contextlib.contextmanager
    def _reading(self, checkpoint: str, *, verify: bool) -> Iterator[tuple[Manifest, Path]]:
        """Lease, verify (once per process) and give a local copy of ``checkpoint``."""
        with self.store.reading(checkpoint) as manifest:
            if verify:
                self._verify(checkpoint)
            yield manifest, self.store.local_copy(checkpoint)  # a cached download on object stores

    def upload(self, src: str | Path | None, metadata: dict[str, Any], *, shard: bool = False) -> str:
        """Copy an existing directory into a new checkpoint; return its uuid.

        With ``shard=True`` every rank of a group calls it (a collective, see :meth:`store_path`) with
        its own folder, or with None to add nothing.
        """
        if src is not None and not Path(src).is_dir():
            raise ConfigError(f"cannot upload {src}: not a directory")
        if src is None and not (shard and self.group.size > 1):
            raise ConfigError("upload(None) uploads nothing: pass the folder to upload")
        with self.store_path(metadata, shard=shard) as (path, uuid):
            if src is not None:
                shutil.copytree(src, path, symlinks=True, dirs_exist_ok=True)
        return uuid

    def download(self, checkpoint: str, dest: str | Path) -> Path:
        """Verify a checkpoint and copy its files (and manifest) into ``dest``."""
        dest = Path(dest)
        with self._reading(checkpoint, verify=True) as (manifest, path):
            for rel in [*(f.path for f in manifest.files), MANIFEST_NAME]:
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path / rel, target, follow_symlinks=False)
        return dest

    def get_metadata(self, checkpoint: str) -> dict[str, Any]:
        """The user metadata of a checkpoint, with ``steps_completed`` and ``uuid``."""
        manifest = self.store.manifest(checkpoint)
        return {**manifest.metadata, "steps_completed": manifest.steps_completed, "uuid": manifest.uuid}

    def delete(self, checkpoint: str) -> None:
        """Delete a checkpoint from storage and mark it deleted in the index."""
        self.store.delete(checkpoint)
        if self._index is not None:
            self._index.mark_checkpoint(checkpoint, "deleted")

    @property
    def latest_checkpoint(self) -> str | None:
        """The uuid of the newest checkpoint whose files verify, or None.

        Verifies at most once per checkpoint and process (this process's own saves are known
        good), so asking it in a loop is cheap.
        """
        manifest = self.newest_good()
        return manifest.uuid if manifest else None

    def list(self) -> list[Manifest]:
        """Committed checkpoints, oldest first."""
        return self.store.list()

    # -- used by Run -------------------------------------------------------------------------
    def newest_good(self) -> Manifest | None:
        self.report_unreadable()
        return self.store.newest_good(on_corrupt=self._report)

    def candidates(self) -> Iterator[Manifest]:
        """Committed checkpoints not known to be corrupt, newest first; unreadable ones are reported."""
        self.report_unreadable()
        return self.store.candidates()

    def report_unreadable(self) -> None:
        """Warn once about each checkpoint directory whose manifest is missing or invalid."""
        for uuid, reason in self.store.corrupt.items():
            self._report(uuid, reason)

    def report_corrupt(self, uuid: str, reason: str) -> None:
        """Mark a checkpoint that failed verification corrupt, warn, and index it as corrupt."""
        self.store.mark_corrupt(uuid, reason)
        self._report(uuid, reason)

    def record_restore(self, manifest: Manifest) -> None:
        """Record (first time only) and say where this attempt resumes; a checkpoint this attempt
        wrote itself is no resume point."""
        if manifest.uuid in self._ours:
            return
        if self._index is None or self._index.record_restore(manifest.uuid, manifest.steps_completed):
            log.info("unbroken: %s resumed from checkpoint %s at step %d", self._label, manifest.uuid,
                     manifest.steps_completed)

    def apply_retention(self, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Delete what the retention policy lets go; never ``keep``, the newest good one, or a leased one."""
        deleted = self.store.apply_retention(self.retention, keep)
        if self._index is not None:
            for uuid in deleted:
                self._index.mark_checkpoint(uuid, "deleted")
        return deleted

    def _after_commit(self, manifest: Manifest) -> None:
        self._ours.add(manifest.uuid)
        if self._index is not None:
            self._index.record_checkpoint(manifest)
        self.apply_retention(keep={manifest.uuid})

    def _verify(self, uuid: str) -> None:
        try:
            self.store.verify(uuid)
        except CorruptCheckpoint as exc:
            self.report_corrupt(uuid, str(exc))
            raise

    def _report(self, uuid: str, reason: str) -> None:
        if uuid in self._reported:
            return
        self._reported.add(uuid)
        warnings.warn(f"skipping corrupt checkpoint {uuid}: {reason}", CorruptCheckpointWarning, stacklevel=4)
        log.warning("unbroken: skipping corrupt checkpoint %s: %s", uuid, reason)
        if self._index is not None:
            manifest = None
            with contextlib.suppress(Exception):
                manifest = self.store.manifest(uuid)
            self._index.mark_checkpoint(uuid, "corrupt", reason, manifest=manifest)


def _steps_of(metadata: Any) -> int:
    if not isinstance(metadata, dict) or "steps_completed" not in metadata:
        raise ConfigError(
            "store_path(metadata) needs metadata with 'steps_completed' (an int): "
            "store_path({'steps_completed': step})"
        )
    return metadata["steps_completed"]
