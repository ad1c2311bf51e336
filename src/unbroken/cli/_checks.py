"""Checkpoint folders as the CLI sees them: list, re-checksum (with progress), copy verified.

Verification (:mod:`unbroken.checkpoint.store.verify`) reads every file in chunks, feeding a
progress callback, and compares size and CRC32C with the manifest; a FIFO, link or folder in
place of a file is corrupt, never a hang, and a checkpoint deleted meanwhile is "gone", not
corrupt. A copy checks the very bytes it writes, so an export is verified in the same single pass.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import BinaryIO, Callable

from ..checkpoint import CheckpointStore
from ..checkpoint.format import manifest as manifest_mod
from ..checkpoint.format.manifest import FileEntry, Manifest
from ..checkpoint.store import verify as verify_mod
from ..config import MANIFEST_NAME
from ..errors import (CheckpointGone, CheckpointNotFound, CorruptCheckpoint, StorageError,
                      UnsupportedFormatVersion)
from ._resolve import Target

Advance = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One checkpoint folder: its manifest, or why it has no usable one.

    ``newer`` is True when the manifest was written by a newer unbroken: unreadable here, but
    not corrupt (never mark or delete it as such).
    """

    uuid: str
    directory: Path | str  #: a folder, or the URL of the checkpoint on an object store
    manifest: Manifest | None
    problem: str | None = None
    newer: bool = False
    store: CheckpointStore | None = None  #: set for checkpoints on an object store (read through a download)

    @property
    def size(self) -> int:
        return self.manifest.size if self.manifest else 0

    @property
    def verify_size(self) -> int:
        """Bytes a verification reads: its own files and the earlier files it uses."""
        return self.size + (self.manifest.referenced_size if self.manifest else 0)

    def local_directory(self) -> Path:
        """The folder to read: its own, or a fresh download of what an object store holds (so that
        what is checked is the storage, not an older cached copy)."""
        if self.store is None or self.store.storage.is_local:
            return self.directory
        self.store.storage.forget_copy(self.uuid)
        return self.store.local_copy(self.uuid)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What verifying one checkpoint found.

    ``status`` is ``"ok"``, ``"corrupt"`` (it cannot be used: damaged, or written by a newer
    unbroken) or ``"gone"`` (deleted while it was being verified: not a failure). ``damaged``
    says whether the checkpoint is proven damaged, so that the index may mark it corrupt.
    """

    status: str
    reason: str | None = None
    damaged: bool = False


OK = Outcome("ok")
GONE = Outcome("gone", "deleted while verifying")


def entries(target: Target, uuid: str | None = None) -> list[Entry]:
    """The checkpoints of a target (oldest first, unusable folders last), or just ``uuid``.

    Raises CheckpointNotFound when ``uuid`` is not there.
    """
    if target.single:
        entry = _single(target.location)
        if uuid is not None and uuid != entry.uuid:
            raise CheckpointNotFound(f"{target.location} holds checkpoint {entry.uuid}, not {uuid}")
        return [entry]
    store = target.store
    if uuid is not None:
        try:
            return [Entry(uuid, _under(target, uuid), store.manifest(uuid),
                          store=None if store.storage.is_local else store)]
        except UnsupportedFormatVersion as exc:
            return [Entry(uuid, _under(target, uuid), None, str(exc), newer=True)]
        except CorruptCheckpoint as exc:
            return [Entry(uuid, _under(target, uuid), None, str(exc))]
    good, problems = store.scan()
    remote = None if store.storage.is_local else store
    return ([Entry(m.uuid, _under(target, m.uuid), m, store=remote) for m in good]
            + [Entry(p.uuid, _under(target, p.uuid), None, p.reason, newer=p.newer)
               for p in sorted(problems, key=lambda p: p.uuid)])


def _under(target: Target, uuid: str) -> Path | str:
    location = target.location
    return location / uuid if isinstance(location, Path) else f"{location.rstrip('/')}/{uuid}"


def _single(directory: Path) -> Entry:
    """A checkpoint folder on its own: its name need not be its uuid (an exported copy)."""
    try:
        manifest = manifest_mod.parse(read_manifest(directory))
        return Entry(manifest.uuid, directory, manifest)
    except UnsupportedFormatVersion as exc:
        return Entry(directory.name, directory, None, str(exc), newer=True)
    except CorruptCheckpoint as exc:
        return Entry(directory.name, directory, None, f"checkpoint {directory.name}: {exc}")
    except (CheckpointNotFound, StorageError) as exc:
        return Entry(directory.name, directory, None, f"cannot read {MANIFEST_NAME}: {exc}")


def check(entry: Entry, advance: Advance) -> Outcome:
    """Re-checksum every file of ``entry`` (progress to ``advance``); say what it found."""
    if entry.manifest is None:
        if not os.path.lexists(entry.directory):
            return GONE
        return Outcome("corrupt", reason(entry.uuid, entry.problem), damaged=not entry.newer)
    try:
        if entry.manifest.refs and entry.store is not None:  # incremental on an object store: the store follows
            entry.store.verify(entry.uuid, force=True)
        else:
            verify_mod.verify_checkpoint(entry.local_directory(), entry.manifest, progress=advance)
            _check_refs(entry, advance)
    except CheckpointGone:
        return GONE
    except (CorruptCheckpoint, StorageError) as exc:
        return Outcome("corrupt", reason(entry.uuid, str(exc)), damaged=True)
    return OK


def _check_refs(entry: Entry, advance: Advance) -> None:
    """An incremental checkpoint in a folder: the files it uses from the checkpoints beside it verify too."""
    for ref in entry.manifest.refs:
        holder = Path(entry.directory).parent / ref.uuid
        try:
            verify_mod.verify_file(holder, ref.uuid, ref.entry, progress=advance)
        except (CorruptCheckpoint, CheckpointGone, StorageError) as exc:
            raise CorruptCheckpoint(f"checkpoint {entry.uuid} uses file {ref.path} of checkpoint {ref.uuid}, "
                                    f"which fails verification: {exc}") from None


def verify(entry: Entry, advance: Advance) -> str | None:
    """Re-checksum every file of ``entry``; return why it is corrupt, or None when it is good or gone."""
    outcome = check(entry, advance)
    return outcome.reason if outcome.status == "corrupt" else None


def reason(uuid: str, message: str | None) -> str | None:
    """``"checkpoint <uuid>: file x fails ..."`` -> ``"file x fails ..."`` (the uuid is shown beside it)."""
    if message is None:
        return None
    return message.removeprefix(f"checkpoint {uuid}: ")


def copy_file(entry: Entry, file: FileEntry, dest: Path, advance: Advance) -> None:
    """Copy one file to ``dest`` (fsynced), checking the bytes copied against the manifest.

    Raises CorruptCheckpoint or CheckpointGone (``dest`` is then incomplete: the caller removes it).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "xb") as sink:
        verify_mod.verify_file(entry.local_directory(), entry.uuid, file, progress=advance, sink=sink)
        _durable(sink)


def copy_manifest(entry: Entry, dest: Path) -> None:
    data = read_manifest(entry.local_directory())
    with open(dest, "xb") as sink:
        sink.write(data)
        _durable(sink)


def read_manifest(directory: Path) -> bytes:
    """The bytes of ``directory/MANIFEST.json`` (a regular file of bounded size: never a hang)."""
    return verify_mod.read_small_file(directory / MANIFEST_NAME, manifest_mod.MAX_MANIFEST_BYTES)


def _durable(sink: BinaryIO) -> None:
    sink.flush()
    os.fsync(sink.fileno())
