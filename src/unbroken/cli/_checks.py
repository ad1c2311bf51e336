"""Checkpoint folders as the CLI sees them: list, re-checksum (with progress), copy verified.

Verification reads every file in chunks, feeding a progress callback, and compares size and
CRC32C with the manifest (:func:`unbroken.checkpoint.store.catalog.check_entry`). A copy checks the very
bytes it writes, so an export is verified in the same single pass.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import BinaryIO, Callable

from ..checkpoint.format import checksum
from ..checkpoint.format import manifest as manifest_mod
from ..checkpoint.format.manifest import FileEntry, Manifest
from ..checkpoint.store.catalog import check_entry
from ..config import MANIFEST_NAME
from ..errors import CheckpointNotFound, CorruptCheckpoint
from ._resolve import Target

_CHUNK = 8 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

Advance = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One checkpoint folder: its manifest, or why it has no usable one."""

    uuid: str
    directory: Path
    manifest: Manifest | None
    problem: str | None = None

    @property
    def size(self) -> int:
        return self.manifest.size if self.manifest else 0


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
            return [Entry(uuid, target.location / uuid, store.manifest(uuid))]
        except CorruptCheckpoint as exc:
            return [Entry(uuid, target.location / uuid, None, str(exc))]
    good, problems = store.scan()
    return ([Entry(m.uuid, target.location / m.uuid, m) for m in good]
            + [Entry(p.uuid, target.location / p.uuid, None, p.reason) for p in sorted(problems, key=lambda p: p.uuid)])


def _single(directory: Path) -> Entry:
    """A checkpoint folder on its own: its name need not be its uuid (an exported copy)."""
    try:
        manifest = manifest_mod.parse(_read_all(directory / MANIFEST_NAME))
        return Entry(manifest.uuid, directory, manifest)
    except CorruptCheckpoint as exc:
        return Entry(directory.name, directory, None, f"checkpoint {directory.name}: {exc}")
    except OSError as exc:
        return Entry(directory.name, directory, None, f"cannot read {MANIFEST_NAME}: {exc.strerror or exc}")


def verify(entry: Entry, advance: Advance) -> str | None:
    """Re-checksum every file of ``entry``; return why it is corrupt, or None when it is good."""
    if entry.manifest is None:
        return reason(entry.uuid, entry.problem)
    try:
        for file in entry.manifest.files:
            _stream(entry, file, advance)
    except CorruptCheckpoint as exc:
        return reason(entry.uuid, str(exc))
    return None


def reason(uuid: str, message: str | None) -> str | None:
    """``"checkpoint <uuid>: file x fails ..."`` -> ``"file x fails ..."`` (the uuid is shown beside it)."""
    if message is None:
        return None
    return message.removeprefix(f"checkpoint {uuid}: ")


def copy_file(entry: Entry, file: FileEntry, dest: Path, advance: Advance) -> None:
    """Copy one file to ``dest`` (fsynced), checking the bytes copied against the manifest.

    Raises CorruptCheckpoint (``dest`` is then incomplete: the caller removes it).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "xb") as sink:
        _stream(entry, file, advance, sink)
        sink.flush()
        os.fsync(sink.fileno())


def copy_manifest(entry: Entry, dest: Path) -> None:
    with open(dest, "xb") as sink:
        sink.write(_read_all(entry.directory / MANIFEST_NAME))
        sink.flush()
        os.fsync(sink.fileno())


def _stream(entry: Entry, file: FileEntry, advance: Advance, sink: BinaryIO | None = None) -> None:
    path = _inside(entry, file.path)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {entry.uuid}: file {file.path} is missing") from None
    except OSError as exc:
        raise CorruptCheckpoint(f"checkpoint {entry.uuid}: cannot open {file.path}: {exc.strerror or exc}") from None
    crc = size = 0
    buffer = memoryview(bytearray(_CHUNK))
    try:
        while n := os.readv(fd, [buffer]):
            crc = checksum.update(crc, buffer[:n])
            size += n
            if sink is not None:
                sink.write(buffer[:n])
            advance(n)
    except OSError as exc:
        raise CorruptCheckpoint(f"checkpoint {entry.uuid}: cannot read {file.path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    check_entry(entry.uuid, file, size, checksum.to_hex(crc))


def _inside(entry: Entry, relpath: str) -> Path:
    """The path of a manifest entry; a symbolic link on the way makes the checkpoint corrupt."""
    path = entry.directory
    for part in relpath.split("/"):
        path = path / part
        if path.is_symlink():
            raise CorruptCheckpoint(
                f"checkpoint {entry.uuid}: {relpath} is a symbolic link; checkpoints never follow links")
    return path


def _read_all(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()
