"""The checkpoint store of one trial: commit, catalog, verification, "latest good", deletion.

A checkpoint is a published storage directory named by its uuid and described by its
``MANIFEST.json``. Readers trust only directories whose manifest parses and whose files match
it; everything else is invisible (uncommitted) or reported as corrupt. Nothing here needs the
tracking database.

Threads: every method may be called from any thread (the training thread restores and
starts saves, the background writer commits and applies retention); the catalog is guarded
by one lock, and no I/O but reading new manifests happens under it.

Cost: the store keeps what it learned in memory (manifests, verification results, corrupt
marks). A commit adds to it without reading anything back; listing re-reads the folder only
when the storage's change token moved (another writer or ``gc``), and then reads the manifests
of new directories only. So commit and retention cost the same with 10 or 1,000 checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ...config import MANIFEST_NAME
from ...errors import (CheckpointError, CheckpointGone, CheckpointNotFound, CorruptCheckpoint,
                       StorageError, UnsupportedFormatVersion)
from ...storage import Storage
from ..format import manifest as manifest_mod
from ..format.manifest import FileEntry, FileRef, Manifest
from . import verify
from .pending import PendingCheckpoint, check_metadata, check_steps, staged_entries
from .references import referrers, spare_referenced
from .retention import RetentionPolicy, to_delete

log = logging.getLogger("unbroken")

#: A change token younger than this is not trusted to cover later changes (coarse mtimes).
_SETTLE_SECONDS = 1.0

Listener = Callable[[Manifest], None]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A directory that is not a usable checkpoint, and why."""

    uuid: str
    reason: str
    newer: bool = False  #: written by a newer unbroken: unreadable here, but not corrupt


class CheckpointStore:
    """The checkpoints of one trial (or any folder of checkpoints) on one storage backend."""

    def __init__(self, storage: Storage, trial: dict[str, Any] | None = None):
        self.storage = storage
        self.trial = trial
        self.manifest_reads = 0  #: manifests read from storage so far (a cost counter for tests)
        self._lock = threading.RLock()
        self._known: dict[str, Manifest] = {}
        self._problems: dict[str, str] = {}
        self._corrupt: dict[str, str] = {}
        self._verified: set[str] = set()
        self._token: Any = None
        self._listeners: list[Listener] = []

    # -- writing -------------------------------------------------------------------------
    def begin(self, steps_completed: int, metadata: dict[str, Any] | None = None, *,
              uuid: str | None = None) -> PendingCheckpoint:
        """Validate a save request and give it an empty staging directory (plan).

        Raises ConfigError for a bad ``steps_completed`` or metadata before anything is written.
        """
        steps = check_steps(steps_completed)
        meta = check_metadata(metadata)
        uuid = uuid or manifest_mod.new_uuid()
        return PendingCheckpoint(uuid, self.storage.commit.stage(uuid), steps, meta)

    def commit(self, pending: PendingCheckpoint) -> Manifest:
        """Write the manifest last and publish atomically (finish); then tell the listeners.

        Files without an entry are checksummed and fsynced here. On any error the pending
        directory is discarded and nothing becomes visible. Listener failures are logged,
        never raised: the checkpoint is committed by then.
        """
        try:
            files, unsynced = staged_entries(pending)
            manifest = manifest_mod.build(pending.steps_completed, files, pending.metadata, uuid=pending.uuid,
                                          trial=self.trial, needs_pickle=pending.needs_pickle, refs=pending.refs)
        except BaseException:
            self.abort(pending)
            raise
        self.storage.commit.finish(pending.path, pending.uuid, MANIFEST_NAME, manifest.to_bytes(), unsynced)
        with self._lock:
            self._known[manifest.uuid] = manifest
            self._verified.add(manifest.uuid)  # checksums were computed from the bytes just written
        self._notify(manifest)
        return manifest

    def abort(self, pending: PendingCheckpoint) -> None:
        """Throw away a pending checkpoint."""
        self.storage.commit.discard(pending.path)

    def on_committed(self, listener: Listener) -> None:
        """Call ``listener(manifest)`` after every commit, in the committing thread."""
        self._listeners.append(listener)

    def _notify(self, manifest: Manifest) -> None:
        for listener in self._listeners:
            try:
                listener(manifest)
            except Exception as exc:  # noqa: BLE001 - the checkpoint is committed; a listener cannot undo it
                log.warning("unbroken: after committing checkpoint %s: %s: %s", manifest.uuid,
                            type(exc).__name__, exc)

    # -- the catalog -----------------------------------------------------------------------
    def scan(self) -> tuple[list[Manifest], list[Problem]]:
        """Committed checkpoints (oldest first, by steps then time) and unreadable directories."""
        with self._lock:
            self._refresh()
            good = sorted(self._known.values(), key=lambda m: (m.steps_completed, m.created_at))
            return good, [Problem(uuid, *problem) for uuid, problem in sorted(self._problems.items())]

    def list(self) -> list[Manifest]:
        """Committed checkpoints whose manifest is valid, oldest first (files not re-checked)."""
        return self.scan()[0]

    def good(self) -> list[Manifest]:
        """Committed checkpoints not known to be corrupt, oldest first."""
        with self._lock:
            return [m for m in self.list() if m.uuid not in self._corrupt]

    def _refresh(self) -> None:
        token = self.storage.change_token()
        if token is not None and token == self._token:
            return
        listed_at = time.time()
        names = set(self.storage.names())
        for gone in (set(self._known) | set(self._problems)) - names:
            self._forget(gone)
        for name in names - set(self._known) - set(self._problems):
            try:
                self._known[name] = self.manifest(name)
            except CheckpointNotFound:
                if self._still_there(name):  # else deleted between the listing and the read: gone
                    self._problems[name] = (f"no {MANIFEST_NAME}: not a committed checkpoint", False)
            except CorruptCheckpoint as exc:
                self._problems[name] = (str(exc), False)
            except UnsupportedFormatVersion as exc:
                self._problems[name] = (str(exc), True)
        self._token = token if token is not None and _settled(token, listed_at) else None

    def _still_there(self, name: str) -> bool:
        local = self.storage.local_dir(name)
        return local.is_dir() if local is not None else name in self.storage.names()

    def _forget(self, uuid: str) -> None:
        for table in (self._known, self._problems, self._corrupt):
            table.pop(uuid, None)
        self._verified.discard(uuid)

    def manifest(self, uuid: str) -> Manifest:
        """Read and parse one checkpoint's manifest from storage. Raises CheckpointNotFound or CorruptCheckpoint."""
        _check_uuid(uuid)
        self.manifest_reads += 1
        local = self.storage.local_dir(uuid)
        try:
            if local is not None:  # never a hang on a FIFO, never a huge allocation
                data = verify.read_small_file(local / MANIFEST_NAME, manifest_mod.MAX_MANIFEST_BYTES)
            else:
                data = _read_remote(self.storage, uuid, MANIFEST_NAME)
        except CheckpointNotFound:
            raise CheckpointNotFound(
                f"no checkpoint {uuid} in {self.storage.location} (list them with `unbroken checkpoints`)"
            ) from None
        except CorruptCheckpoint as exc:
            # One such directory must not stop scan()/newest_good() from finding the others.
            raise CorruptCheckpoint(f"checkpoint {uuid}: {exc}") from None
        try:
            return manifest_mod.parse(data, expected_uuid=uuid)
        except CorruptCheckpoint as exc:
            raise type(exc)(f"checkpoint {uuid}: {exc}") from None

    # -- verification ------------------------------------------------------------------------
    def verify(self, uuid: str, *, force: bool = False) -> Manifest:
        """Re-checksum every file of a checkpoint; return its manifest or raise CorruptCheckpoint.

        Raises CheckpointGone when it was deleted meanwhile (or before). Results are remembered
        for the life of this store unless ``force``: a verified checkpoint costs no I/O again.
        """
        with self._lock:
            known = self._known.get(uuid) if uuid in self._verified and not force else None
        if known is not None:
            return known  # verified by this store already (or written by it): no read at all
        try:
            manifest = self.manifest(uuid)
        except CheckpointNotFound:
            raise CheckpointGone(f"checkpoint {uuid} was deleted before it could be verified") from None
        if force:
            self.storage.forget_copy(uuid)  # check what the storage holds, not a cached download
        try:
            self._verify_files(manifest)
        except CorruptCheckpoint:
            if self.storage.is_local:
                raise
            self.storage.forget_copy(uuid)  # the cached download may be what is damaged: fetch once more
            self._verify_files(manifest)
        self.mark_verified(uuid)
        return manifest

    def _verify_files(self, manifest: Manifest) -> None:
        for entry in manifest.files:
            self.verify_file(manifest.uuid, entry)
        for ref in manifest.refs:
            self.verify_ref(manifest.uuid, ref)

    def verify_ref(self, uuid: str, ref: FileRef) -> None:
        """Check a file that ``uuid`` refers to against the reference (size, CRC32C) in ``uuid``'s manifest.

        Raises CorruptCheckpoint naming both checkpoints: a referenced file that is damaged or
        gone makes every checkpoint that uses it unusable (never CheckpointGone: ``uuid`` exists).
        """
        try:
            verify.verify_file(self.local_copy(ref.uuid), ref.uuid, ref.entry)
        except (CorruptCheckpoint, CheckpointGone, StorageError) as exc:
            raise CorruptCheckpoint(f"checkpoint {uuid} uses file {ref.path} of checkpoint {ref.uuid}, "
                                    f"which fails verification: {exc}") from None

    def verify_file(self, uuid: str, entry: FileEntry) -> None:
        """Check one file's kind, size and checksum against its manifest entry.

        Raises CorruptCheckpoint, or CheckpointGone when the checkpoint was deleted meanwhile.
        """
        try:
            verify.verify_file(self.local_copy(uuid), uuid, entry)
        except StorageError as exc:
            raise CorruptCheckpoint(f"checkpoint {uuid}: cannot read {entry.path}: {exc}") from None

    def mark_verified(self, uuid: str) -> None:
        """Record that a reader checked every file of ``uuid``."""
        with self._lock:
            self._verified.add(uuid)

    def mark_corrupt(self, uuid: str, reason: str) -> None:
        """Record that ``uuid`` failed verification: it is skipped from now on."""
        with self._lock:
            self._corrupt[uuid] = reason
            self._verified.discard(uuid)

    @property
    def corrupt(self) -> dict[str, str]:
        """Checkpoints found corrupt by this store (uuid -> reason), unreadable manifests included
        (but not those of a newer format: they are fine, just not readable by this version)."""
        with self._lock:
            self._refresh()
            unreadable = {uuid: reason for uuid, (reason, newer) in self._problems.items() if not newer}
            return {**unreadable, **self._corrupt}

    def newest_good(self, on_corrupt: Callable[[str, str], None] | None = None) -> Manifest | None:
        """The committed checkpoint with the most steps whose files verify, or None.

        Each checkpoint that fails verification is marked corrupt, reported to
        ``on_corrupt(uuid, reason)`` and skipped; one deleted meanwhile is skipped silently.
        """
        for manifest in self.candidates():
            try:
                return self.verify(manifest.uuid)
            except CheckpointGone:
                continue
            except CorruptCheckpoint as exc:
                self.mark_corrupt(manifest.uuid, str(exc))
                if on_corrupt:
                    on_corrupt(manifest.uuid, str(exc))
        return None

    def candidates(self) -> Iterator[Manifest]:
        """Committed checkpoints not known to be corrupt, newest first (for a reader that verifies)."""
        for manifest in reversed(self.good()):
            if manifest.uuid not in self._corrupt:  # marked while the caller iterated
                yield manifest

    def local_path(self, uuid: str) -> Path | None:
        """Local directory of a checkpoint when its storage is local."""
        _check_uuid(uuid)
        return self.storage.local_dir(uuid)

    def local_copy(self, uuid: str) -> Path:
        """A local folder with the checkpoint's files: its own folder on local storage, else a
        cached download (reused while its manifest matches). Verify before trusting it."""
        _check_uuid(uuid)
        try:
            return self.storage.materialize(uuid)
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise CheckpointGone(f"checkpoint {uuid} was deleted before it could be read") from None
            raise

    @contextlib.contextmanager
    def reading(self, uuid: str) -> Iterator[Manifest]:
        """Hold a read lease on ``uuid`` for the block: no retention or ``gc`` (any process) deletes it.

        Yields its manifest; raises CheckpointGone if it was deleted before the lease was taken.
        """
        _check_uuid(uuid)
        with self.storage.leases.hold(uuid):
            try:
                manifest = self.manifest(uuid)
            except CheckpointNotFound:
                raise CheckpointGone(f"checkpoint {uuid} was deleted before it could be read") from None
            yield manifest

    # -- deletion ------------------------------------------------------------------------------
    def delete(self, uuid: str) -> None:
        """Delete a checkpoint. Raises CheckpointNotFound, or CheckpointError while a reader holds it
        or another checkpoint refers to its files (delete the referring ones first: newest first)."""
        _check_uuid(uuid)
        if uuid not in self.storage.names():
            raise CheckpointNotFound(f"no checkpoint {uuid} in {self.storage.location}")
        if not self.try_delete(uuid):
            users = self.referrers(uuid)
            if users:
                raise CheckpointError(f"checkpoint {uuid} holds files that {len(users)} later checkpoint(s) use "
                                      f"({', '.join(users[:3])}); delete those first")
            raise CheckpointError(f"checkpoint {uuid} is being read (a restore or restore_path block holds it); "
                                  "try again when the reader is done")

    def referrers(self, uuid: str) -> list[str]:
        """The committed checkpoints that refer to files of ``uuid`` (re-listed if storage changed)."""
        with self._lock:
            self._refresh()
            return referrers(uuid, self._known.values())

    def try_delete(self, uuid: str) -> bool:
        """Delete ``uuid`` unless a reader holds it or a checkpoint refers to it; True if it is gone now.

        The references are checked while the exclusive lease is held, after re-listing: a
        checkpoint committed meanwhile (here or by another process) that refers to ``uuid`` keeps it.
        """
        with self.storage.leases.try_exclusive(uuid) as free:
            if not free or self.referrers(uuid):
                return False
            self.storage.delete(uuid)
        with self._lock:
            self._forget(uuid)
        return True

    def apply_retention(self, policy: RetentionPolicy, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Delete what ``policy`` lets go: never ``keep``, the newest good one, one being read, or one
        whose files a remaining checkpoint uses (incremental checkpoints).

        Returns the uuids deleted. A failed deletion is logged and skipped.
        """
        good = self.good()
        protected = set(keep) | ({good[-1].uuid} if good else set())
        deleted = []
        for manifest in reversed(spare_referenced(to_delete(policy, good, protected), self.list())):
            try:
                if self.try_delete(manifest.uuid):
                    deleted.append(manifest.uuid)
            except StorageError as exc:
                log.warning("unbroken: retention could not delete checkpoint %s: %s", manifest.uuid, exc)
        return deleted

    def stale_staging(self) -> list[str]:
        """Staging directories of writers that died (nothing is removed)."""
        return self.storage.commit.stale()

    def clean_stale(self) -> list[str]:
        """Remove staging directories of writers that died; return their names."""
        return self.storage.commit.clean_stale()


def _read_remote(storage: Storage, uuid: str, relpath: str) -> bytes:
    """A file of a checkpoint on storage without local files; a missing one is CheckpointNotFound."""
    try:
        return storage.read_bytes(uuid, relpath)
    except StorageError as exc:
        if isinstance(exc.__cause__, (FileNotFoundError, NotADirectoryError)):
            raise CheckpointNotFound(f"{relpath} of {uuid} does not exist") from None
        raise


def _settled(token: Any, now: float) -> bool:
    """True when the folder's mtime (in the token) is old enough that a later change moves it."""
    try:
        return now - token[1] / 1e9 > _SETTLE_SECONDS
    except (TypeError, IndexError):
        return True


def _check_uuid(uuid: Any) -> None:
    if not isinstance(uuid, str) or not uuid or "/" in uuid or "\\" in uuid or uuid.startswith("."):
        raise CheckpointNotFound(f"{uuid!r} is not a checkpoint id")
