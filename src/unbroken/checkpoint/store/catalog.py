"""The checkpoint store: commit protocol, listing, verification, "latest good", deletion.

A checkpoint is a published storage directory named by its uuid and described by its
``MANIFEST.json``. Readers only trust directories whose manifest parses and whose files match
it; everything else is invisible (uncommitted) or reported as corrupt. Nothing here needs the
tracking database.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

from ...config import MANIFEST_NAME
from ...errors import CheckpointNotFound, ConfigError, CorruptCheckpoint, StorageError
from ...storage import Storage
from ...storage.local import storage_error
from ..format import checksum
from ..format import manifest as manifest_mod
from ..format.manifest import FileEntry, Manifest


@dataclasses.dataclass
class PendingCheckpoint:
    """A checkpoint being written: files go into ``path``; invisible until committed."""

    uuid: str
    path: Path


@dataclasses.dataclass(frozen=True)
class Problem:
    """A directory that is not a usable checkpoint, and why."""

    uuid: str
    reason: str


class CheckpointStore:
    """The checkpoints of one trial (or any folder of checkpoints) on one storage backend."""

    def __init__(self, storage: Storage, trial: dict[str, Any] | None = None):
        self.storage = storage
        self.trial = trial
        self._verified: set[str] = set()

    # -- writing -------------------------------------------------------------------------
    def begin(self, uuid: str | None = None) -> PendingCheckpoint:
        """Start a checkpoint: returns an empty local directory to write its files into."""
        uuid = uuid or manifest_mod.new_uuid()
        return PendingCheckpoint(uuid, self.storage.stage(uuid))

    def commit(self, pending: PendingCheckpoint, steps_completed: int, metadata: dict[str, Any] | None = None,
               *, known: dict[str, FileEntry] | None = None, needs_pickle: bool = False) -> Manifest:
        """Checksum what is in ``pending.path``, write the manifest last and publish atomically.

        ``known`` gives entries the writer already checksummed while writing. On any error the
        pending directory is discarded and nothing becomes visible.
        """
        try:
            _check_steps(steps_completed)
            metadata = _json_metadata(metadata or {})
            files = [(known or {}).get(rel) or _entry_of(pending.path, rel) for rel in _relpaths(pending.path)]
            manifest = manifest_mod.build(steps_completed, files, metadata, uuid=pending.uuid,
                                          trial=self.trial, needs_pickle=needs_pickle)
        except BaseException:
            self.abort(pending)
            raise
        self.storage.publish(pending.path, pending.uuid, MANIFEST_NAME, manifest.to_bytes())
        self._verified.add(manifest.uuid)  # checksums were computed from the bytes just written
        return manifest

    def abort(self, pending: PendingCheckpoint) -> None:
        """Throw away a pending checkpoint."""
        self.storage.discard(pending.path)

    # -- reading -------------------------------------------------------------------------
    def scan(self) -> tuple[list[Manifest], list[Problem]]:
        """All committed checkpoints (oldest first, by steps then time), and unreadable directories."""
        good, problems = [], []
        for name in self.storage.names():
            try:
                good.append(self.manifest(name))
            except CheckpointNotFound:
                problems.append(Problem(name, f"no {MANIFEST_NAME}: not a committed checkpoint"))
            except CorruptCheckpoint as exc:
                problems.append(Problem(name, str(exc)))
        good.sort(key=lambda m: (m.steps_completed, m.created_at))
        return good, problems

    def list(self) -> list[Manifest]:
        """Committed checkpoints whose manifest is valid, oldest first (files not re-checked)."""
        return self.scan()[0]

    def manifest(self, uuid: str) -> Manifest:
        """The manifest of one checkpoint. Raises CheckpointNotFound or CorruptCheckpoint."""
        _check_uuid(uuid)
        try:
            data = self.storage.read_bytes(uuid, MANIFEST_NAME)
        except StorageError as exc:
            if isinstance(exc.__cause__, (FileNotFoundError, NotADirectoryError)):
                raise CheckpointNotFound(
                    f"no checkpoint {uuid} in {self.storage.location} (list them with `unbroken checkpoints`)"
                ) from None
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                # One such directory must not stop scan()/newest_good() from finding the others.
                raise CorruptCheckpoint(
                    f"checkpoint {uuid}: {MANIFEST_NAME} is not a regular file (a symbolic link or a folder)"
                ) from None
            raise
        try:
            return manifest_mod.parse(data, expected_uuid=uuid)
        except CorruptCheckpoint as exc:
            raise type(exc)(f"checkpoint {uuid}: {exc}") from None

    def verify(self, uuid: str, *, force: bool = False) -> Manifest:
        """Re-checksum every file of a checkpoint; return its manifest or raise CorruptCheckpoint.

        Results are remembered for the life of this store unless ``force``.
        """
        manifest = self.manifest(uuid)
        if force or uuid not in self._verified:
            for entry in manifest.files:
                self.verify_file(uuid, entry)
            self._verified.add(uuid)
        return manifest

    def verify_file(self, uuid: str, entry: FileEntry) -> None:
        """Check one file's size and checksum against its manifest entry."""
        local = self.storage.local_dir(uuid)
        path = (local / entry.path) if local is not None else None
        try:
            if path is None:
                data = self.storage.read_bytes(uuid, entry.path)
                size, crc = len(data), checksum.to_hex(checksum.update(0, data))
            else:
                _refuse_links(local, entry.path)
                size, crc = checksum.of_file(path)
        except FileNotFoundError:
            raise CorruptCheckpoint(f"checkpoint {uuid}: file {entry.path} is missing") from None
        except OSError as exc:
            raise CorruptCheckpoint(f"checkpoint {uuid}: cannot read {entry.path}: {exc}") from None
        check_entry(uuid, entry, size, crc)

    def mark_verified(self, uuid: str) -> None:
        """Record that a reader checked every file of ``uuid`` itself."""
        self._verified.add(uuid)

    def newest_good(self, on_corrupt: Callable[[str, str], None] | None = None,
                    exclude: set[str] | frozenset[str] = frozenset()) -> Manifest | None:
        """The committed checkpoint with the most steps whose files verify, or None.

        Each checkpoint that fails verification is reported to ``on_corrupt(uuid, reason)``
        and skipped.
        """
        for manifest in self.candidates(exclude):
            try:
                return self.verify(manifest.uuid)
            except CorruptCheckpoint as exc:
                if on_corrupt:
                    on_corrupt(manifest.uuid, str(exc))
        return None

    def candidates(self, exclude: set[str] | frozenset[str] = frozenset()) -> Iterator[Manifest]:
        """Committed checkpoints, newest first, for a caller that verifies while it reads."""
        for manifest in reversed(self.list()):
            if manifest.uuid not in exclude:
                yield manifest

    def local_path(self, uuid: str) -> Path | None:
        """Local directory of a checkpoint when its storage is local."""
        _check_uuid(uuid)
        return self.storage.local_dir(uuid)

    def delete(self, uuid: str) -> None:
        """Delete a checkpoint (raises CheckpointNotFound if there is none by that id)."""
        _check_uuid(uuid)
        if uuid not in self.storage.names():
            raise CheckpointNotFound(f"no checkpoint {uuid} in {self.storage.location}")
        self.storage.delete(uuid)
        self._verified.discard(uuid)

    def clean_stale(self) -> list[str]:
        """Remove staging directories of writers that died."""
        return self.storage.clean_stale()


def check_entry(uuid: str, entry: FileEntry, size: int, crc: str) -> None:
    """Raise CorruptCheckpoint if a file's size or checksum differs from its manifest entry."""
    if size != entry.size:
        raise CorruptCheckpoint(
            f"checkpoint {uuid}: file {entry.path} has {size} bytes, the manifest says {entry.size} (truncated?)"
        )
    if crc != entry.crc32c:
        raise CorruptCheckpoint(f"checkpoint {uuid}: file {entry.path} fails its checksum ({crc} != {entry.crc32c})")


def _refuse_links(root: Path, relpath: str) -> None:
    path = root
    for part in relpath.split("/"):
        path = path / part
        if path.is_symlink():
            raise CorruptCheckpoint(f"{relpath} is a symbolic link; checkpoints never follow links")


def _relpaths(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            mode = os.lstat(full).st_mode
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise ConfigError(f"cannot commit {rel}: symbolic links are not allowed in a checkpoint")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ConfigError(f"cannot commit {rel}: only regular files and folders are allowed")
            if stat.S_ISREG(mode):
                if rel == MANIFEST_NAME:
                    raise ConfigError(f"cannot commit: {MANIFEST_NAME} is a reserved file name")
                out.append(manifest_mod.check_relpath(rel))
    return sorted(out)


def _entry_of(root: Path, rel: str) -> FileEntry:
    try:
        size, crc = checksum.of_file(root / rel)
    except OSError as exc:
        raise storage_error("read", root / rel, exc) from exc
    return FileEntry(rel, size, crc)


def _json_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise ConfigError(f"checkpoint metadata must be a dict, not {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint metadata must be JSON (no NaN, no objects): {exc}") from None


def _check_steps(steps_completed: Any) -> None:
    if isinstance(steps_completed, bool) or not isinstance(steps_completed, int) or steps_completed < 0:
        raise ConfigError(f"steps_completed must be a non-negative int, not {steps_completed!r}")


def _check_uuid(uuid: Any) -> None:
    if not isinstance(uuid, str) or not uuid or "/" in uuid or "\\" in uuid or uuid.startswith("."):
        raise CheckpointNotFound(f"{uuid!r} is not a checkpoint id")
