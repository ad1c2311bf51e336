"""The source files of a flattening (:mod:`.flatten`): a checkpoint's own tensor file and the files
of earlier checkpoints it refers to, opened, their headers read, and checked to hold exactly the
State's tensors, each once. Errors about a referenced file name the checkpoint that uses it and the
one that holds it. Any thread; blocks for small reads.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from ...config import MANIFEST_NAME
from ...errors import CheckpointGone, CheckpointNotFound, CorruptCheckpoint, StorageError, TensorFileError
from ...storage.fsio import storage_error
from ..format import checksum
from ..format import manifest as manifest_mod
from ..format import tensorfile
from ..format.manifest import Manifest
from ..format.tensorfile import Header, TensorEntry
from ..io import reader
from ..store import verify
from .statefile import STATE_JSON, TENSORS_FILE

#: ``resolve(uuid)`` -> the local folder of checkpoint ``uuid`` (default: beside the checkpoint read).
Resolve = Callable[[str], Path]


@dataclasses.dataclass
class Source:
    """A part opened: descriptor, header (and its bytes), the tensors taken from it in file order."""

    part: reader.Source
    fd: int
    header: Header
    header_bytes: bytes
    taken: list[TensorEntry]


def read_error(part: reader.Source, exc: OSError) -> StorageError | CorruptCheckpoint:
    """A read error: StorageError for the checkpoint's own file; a referenced file that cannot be
    read makes the checkpoint unusable (CorruptCheckpoint, as the store's verification says)."""
    if part.user is None:
        return storage_error("read", part.label, exc)
    return CorruptCheckpoint(f"cannot read it: {exc.strerror or exc}")



def _parts(directory: Path, manifest: Manifest, resolve: Resolve | None) -> Iterator[reader.Source]:
    """The checkpoint's own tensor file, then each file it refers to (resolving lazily: a
    download happens only when that part is reached)."""
    own = {f.path: f for f in manifest.files}.get(TENSORS_FILE)
    if own is not None:
        yield reader.Source(Path(directory), manifest.uuid, own)
    find = resolve or (lambda uuid: Path(directory).parent / uuid)
    for ref in manifest.refs:
        if ref.tensors:
            with named_for(reader.Source(Path(directory), ref.uuid, ref.entry, user=manifest.uuid)):
                holder = Path(find(ref.uuid))
            yield reader.Source(holder, ref.uuid, ref.entry, frozenset(ref.tensors), manifest.uuid)


class opened_sources:
    """Open every part, read its header, and check that together they hold exactly ``order``
    (each tensor once); closes every descriptor on exit."""

    def __init__(self, directory: Path, manifest: Manifest, order: list[str], resolve: Resolve | None):
        self.directory, self.manifest, self.order, self.resolve = Path(directory), manifest, order, resolve
        self.sources: list[Source] = []

    def __enter__(self) -> list[Source]:
        try:
            for part in _parts(self.directory, self.manifest, self.resolve):
                with named_for(part, self.directory):
                    self.sources.append(_open(part, self.order))
            _check_union(self.manifest.uuid, self.sources, self.order)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.sources

    def __exit__(self, *exc_info: Any) -> None:
        for source in self.sources:
            os.close(source.fd)
        self.sources = []


def _open(part: reader.Source, order: list[str]) -> Source:
    """Open a part (no links, size checked), check its holder still lists it, read its header."""
    if part.user is not None:
        _check_holder_lists(part)
    fd = verify.open_entry(part.directory, part.uuid, part.entry)
    try:
        limit = tensorfile.max_header_size(order) if part.user is None else tensorfile.MAX_HEADER
        try:
            header, header_bytes = tensorfile.pread_header(fd, part.entry.size, limit)
        except TensorFileError as exc:
            # Most likely damage: say so when the checksum fails, else blame the header.
            crc = verify.stream_crc(fd, part.entry.size, label=part.label)
            verify.check_entry(part.uuid, part.entry, part.entry.size, checksum.to_hex(crc))
            raise TensorFileError(f"checkpoint {part.uuid}: file {part.entry.path}: {exc}") from None
        except OSError as exc:
            raise read_error(part, exc) from exc
        taken = [e for e in header.entries if part.names is None or e.name in part.names]
        if part.names is not None and len(taken) != len(part.names):
            missing = sorted(part.names - {e.name for e in taken})[:3]
            raise CorruptCheckpoint(f"checkpoint {part.uuid}: file {part.entry.path} does not hold the tensors "
                                    f"taken from it: {missing}")
        return Source(part, fd, header, header_bytes, taken)
    except BaseException:
        os.close(fd)
        raise


def _check_holder_lists(part: reader.Source) -> None:
    """The referenced checkpoint's own manifest must list the file as the reference describes it."""
    try:
        data = verify.read_small_file(part.directory / MANIFEST_NAME, manifest_mod.MAX_MANIFEST_BYTES)
    except CheckpointNotFound:
        raise CheckpointGone(f"checkpoint {part.uuid} was deleted") from None
    holder = manifest_mod.parse(data, expected_uuid=part.uuid)
    if part.entry not in holder.files:
        raise CorruptCheckpoint(f"checkpoint {part.uuid}: its manifest does not list file {part.entry.path} "
                                f"with {part.entry.size} bytes and CRC32C {part.entry.crc32c}")


def _check_union(uuid: str, sources: list[Source], order: list[str]) -> None:
    taken: set[str] = set()
    for source in sources:
        for e in source.taken:
            if e.name in taken:
                raise CorruptCheckpoint(f"checkpoint {uuid}: tensor {e.name!r} is in two files")
            taken.add(e.name)
    missing, extra = sorted(set(order) - taken)[:3], sorted(taken - set(order))[:3]
    if missing:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {STATE_JSON} refers to tensors no file holds: {missing}")
    if extra:
        raise CorruptCheckpoint(f"checkpoint {uuid}: its tensor files hold tensors {STATE_JSON} does not "
                                f"refer to: {extra}")


class named_for:
    """Inside it, an error about a referenced file names the checkpoint that uses it and the one
    that holds it; a referenced checkpoint that is gone is corrupt for its user (unless the user
    itself, in ``directory``, is gone: then CheckpointGone)."""

    def __init__(self, part: reader.Source, directory: Path | None = None):
        self.part, self.directory = part, directory

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        part = self.part
        if exc is None or part.user is None:
            return False
        if isinstance(exc, CheckpointGone):
            if self.directory is not None and verify.is_gone(self.directory):
                raise CheckpointGone(f"checkpoint {part.user} was deleted while it was being read") from None
            raise CorruptCheckpoint(f"{part.label}, which was deleted") from None
        if isinstance(exc, CorruptCheckpoint):
            raise CorruptCheckpoint(f"{part.label}, which fails verification: {exc}") from None
        return False
