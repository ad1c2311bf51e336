"""Flattening a checkpoint: one self-contained copy of it, every byte verified on the way.

An incremental checkpoint (see :mod:`.incremental`) keeps only the tensors that changed in its
own ``tensors.safetensors`` and refers to files of earlier checkpoints for the rest. To take it
out of its checkpoints folder, :func:`flatten_tensors` writes the one complete tensor file a
complete save of the same State would have written: every tensor, own and referenced, with
its name, dtype and shape, laid out as :func:`..io.snapshot.plan_subset` lays out a State's
tensors (largest item size first, then in the order the State's tree lists them), so the
file equals byte for byte the file a complete save of that State writes.
:func:`flatten_checkpoint` writes a complete checkpoint folder around it.

Verification, streaming: each source file (the checkpoint's own tensor file and every file it
refers to) is read once, sequentially, in chunks of :data:`CHUNK` bytes (one buffer, whatever
the size of the state). Each chunk extends the CRC32C of its source, which is compared with
the manifest entry (the referring manifest's ``FileRef``, and the referenced checkpoint's own
manifest must list the file the same way), and the parts of it that belong to a tensor taken
from that file are written at their place in the new file in the same step: the bytes written
are the bytes checksummed. The new file's CRC32C is joined from each tensor's own
(:mod:`..io.crcjoin`), so it describes the verified source bytes, not whatever landed on disk:
a later verification of the copy checks the copy. Nothing is renamed into place here; on
any error the partial output is removed.

Paths: a checkpoint's files are opened without following links below its folder
(:mod:`..store.verify`); a referenced checkpoint is the folder named by its uuid beside the
checkpoint (a manifest never names a uuid holding ``/`` or starting with ``.``), or what the
caller's ``resolve(uuid)`` returns (a download of an object store's copy).

Any thread; blocks for the reads and writes. Raises :class:`CorruptCheckpoint` naming the file
(and, for a referenced one, the checkpoint that uses it and the one that holds it),
:class:`CheckpointGone` when the checkpoint itself was deleted meanwhile, StorageError for
I/O errors of the destination.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ...config import MANIFEST_NAME
from ...errors import CorruptCheckpoint, StorageError
from ...storage.fsio import storage_error, write_durably
from ..format import checksum
from ..format import codec
from ..format import manifest as manifest_mod
from ..format.manifest import FileEntry, Manifest
from ..format.tensorfile import Header
from ..io import crcjoin
from ..io.snapshot import plan_subset
from ..store import verify
from .flatten_sources import Resolve, Source, named_for, opened_sources, read_error
from .statefile import STATE_FORMAT, STATE_JSON, TENSORS_FILE

#: Bytes read from a source file at a time (the only buffer a flattening holds).
CHUNK = 8 << 20
#: ``progress(n)``: ``n`` more bytes of the sources were read and checked.
Progress = Callable[[int], None]


def sources_size(manifest: Manifest) -> int:
    """Bytes a flattening of ``manifest`` reads: its own files and the files it refers to."""
    return manifest.size + sum(r.size for r in manifest.refs if r.tensors)


def flatten_checkpoint(directory: Path, manifest: Manifest, dest: Path, *, resolve: Resolve | None = None,
                       progress: Progress | None = None) -> Manifest:
    """Write checkpoint ``manifest`` (in ``directory``) as a complete checkpoint folder ``dest``.

    ``dest`` must not exist; it is created and holds, once this returns, every file of the
    checkpoint (``state.json`` and the other files copied verified, ``tensors.safetensors``
    flattened: see :func:`flatten_tensors`) and a MANIFEST.json without references. Returns
    that manifest. On any error ``dest`` is removed.

    The manifest is rewritten, keeping uuid, ``steps_completed``, ``created_at``, trial,
    metadata and ``needs_pickle``: the original lists references to files that are not in
    ``dest`` and the checksum of its own partial tensor file, so it cannot describe the copy.
    Keeping the uuid is honest because the copy holds the same checkpoint -- restoring either
    gives the same State, bit for bit -- stored without references (format 1, readable by every
    unbroken); only the bytes of its tensor file differ, and its manifest says so by their checksum.
    """
    dest = Path(dest)
    try:
        dest.mkdir(parents=True)
    except OSError as exc:
        raise storage_error("create", dest, exc) from exc
    try:
        files = []
        state_data = None
        for entry in manifest.files:
            if entry.path == TENSORS_FILE:
                continue
            if entry.path == STATE_JSON:
                state_data = verify.read_entry(directory, manifest.uuid, entry)
                _write_new(dest, entry.path, state_data)
                _advance(progress, entry.size)
            else:
                _copy_verified(directory, manifest.uuid, entry, dest, progress)
            files.append(entry)
        if state_data is None:
            raise CorruptCheckpoint(f"checkpoint {manifest.uuid} holds no {STATE_JSON}: only checkpoints saved "
                                    "from unbroken.State can be flattened")
        files.append(_flatten(directory, manifest, _parse_tree(manifest.uuid, state_data), dest / TENSORS_FILE,
                              resolve, progress))
        flat = _rewritten(manifest, files)
        write_durably(dest / MANIFEST_NAME, flat.to_bytes())
        _fsync_dir(dest)
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise storage_error("write the flattened checkpoint into", dest, exc) from exc
        raise
    return flat


def flatten_tensors(directory: Path, manifest: Manifest, dest: Path, *, resolve: Resolve | None = None,
                    progress: Progress | None = None) -> FileEntry:
    """Write every tensor of the State checkpoint ``manifest`` (in ``directory``) into one new
    complete safetensors file ``dest`` (it must not exist; fsynced); return its entry (path
    ``tensors.safetensors``, size, CRC32C). On any error ``dest`` is removed.

    The tensors are the checkpoint's own and those it takes from files of earlier checkpoints;
    together they must be exactly the tensors its ``state.json`` refers to, each held once.
    """
    entries = {f.path: f for f in manifest.files}
    if STATE_JSON not in entries:
        raise CorruptCheckpoint(f"checkpoint {manifest.uuid} holds no {STATE_JSON}: only checkpoints saved "
                                "from unbroken.State can be flattened")
    tree = _parse_tree(manifest.uuid, verify.read_entry(directory, manifest.uuid, entries[STATE_JSON]))
    _advance(progress, entries[STATE_JSON].size)
    return _flatten(directory, manifest, tree, Path(dest), resolve, progress)


# -- the tensor file -------------------------------------------------------------------------------
def _flatten(directory: Path, manifest: Manifest, tree: Any, dest: Path, resolve: Resolve | None,
             progress: Progress | None) -> FileEntry:
    order = _tensor_order(manifest.uuid, tree)
    with opened_sources(directory, manifest, order, resolve) as sources:
        found = {e.name: e for s in sources for e in s.taken}
        header_bytes, header = plan_subset([(n, found[n].dtype, found[n].shape) for n in order])
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise storage_error("create", dest, exc) from exc
        try:
            crc = _write_flat(fd, dest, sources, header_bytes, header, progress)
        except BaseException:
            os.close(fd)
            dest.unlink(missing_ok=True)
            raise
        os.close(fd)
    return FileEntry(TENSORS_FILE, header.file_size, checksum.to_hex(crc))


def _write_flat(fd: int, dest: Path, sources: list[Source], header_bytes: bytes, header: Header,
                progress: Progress | None) -> int:
    """Fill the new file from every source (each read once, verified); fsync; return its CRC32C."""
    places = {e.name: header.data_start + e.begin for e in header.entries}
    crcs = {e.name: 0 for e in header.entries}
    try:
        _pwrite_all(fd, memoryview(header_bytes), 0)
        os.ftruncate(fd, header.file_size)
    except OSError as exc:
        raise storage_error("write", dest, exc) from exc
    for source in sources:
        with named_for(source.part):
            _copy_source(source, fd, dest, places, crcs, progress)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise storage_error("write", dest, exc) from exc
    crc = checksum.update(0, header_bytes)
    for e in header.entries:
        crc = crcjoin.join(crc, crcs[e.name], e.nbytes)
    return crc


def _copy_source(source: Source, out: int, dest: Path, places: dict[str, int], crcs: dict[str, int],
                 progress: Progress | None) -> None:
    """Read a source once from its data start: checksum every byte, write the taken tensors' bytes
    at their place in ``out`` (extending each one's CRC), then compare with the source's entry."""
    part, header = source.part, source.header
    size, start = part.entry.size, header.data_start
    crc = checksum.update(0, source.header_bytes)
    _advance(progress, start)
    taken, first = source.taken, 0
    buffer = memoryview(bytearray(min(CHUNK, max(size - start, 1))))
    position = start
    while position < size:
        n = _read_chunk(source, buffer[:min(CHUNK, size - position)], position)
        chunk = buffer[:n]
        crc = checksum.update(crc, chunk)
        low, high = position - start, position - start + n
        while first < len(taken) and taken[first].end <= low:
            first += 1
        for e in taken[first:]:
            if e.begin >= high:
                break
            a, b = max(e.begin, low), min(e.end, high)
            piece = chunk[a - low:b - low]
            crcs[e.name] = checksum.update(crcs[e.name], piece)
            try:
                _pwrite_all(out, piece, places[e.name] + a - e.begin)
            except OSError as exc:
                raise storage_error("write", dest, exc) from exc
        position += n
        _advance(progress, n)
    verify.check_entry(part.uuid, part.entry, size, checksum.to_hex(crc))


def _read_chunk(source: Source, view: memoryview, position: int) -> int:
    try:
        n = os.preadv(source.fd, [view], position)
    except OSError as exc:
        raise read_error(source.part, exc) from exc
    if n == 0:
        raise CorruptCheckpoint(f"checkpoint {source.part.uuid}: file {source.part.entry.path} ended early "
                                f"(at byte {position} of {source.part.entry.size})")
    return n


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


# -- the rest ----------------------------------------------------------------------------------------
def _parse_tree(uuid: str, data: bytes | bytearray) -> Any:
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {STATE_JSON} is not valid JSON: {exc}") from None
    if not isinstance(tree, dict) or tree.get("format") != STATE_FORMAT:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {STATE_JSON} is not an unbroken state file")
    return tree


def _tensor_order(uuid: str, tree: Any) -> list[str]:
    """The tensor keys of a state tree in the order its encoder met them (depth first, in order)."""
    try:
        return list(codec.tensor_refs(tree))  # every reference well-formed
    except CorruptCheckpoint as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {STATE_JSON}: {exc}") from None


def _rewritten(manifest: Manifest, files: list[FileEntry]) -> Manifest:
    built = manifest_mod.build(manifest.steps_completed, files, manifest.metadata, uuid=manifest.uuid,
                               trial=manifest.trial, needs_pickle=manifest.needs_pickle)
    flat = dataclasses.replace(built, created_at=manifest.created_at)
    manifest_mod.parse(flat.to_bytes())  # the checks every reader applies
    return flat


def _copy_verified(directory: Path, uuid: str, entry: FileEntry, dest: Path, progress: Progress | None) -> None:
    target = dest / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as sink:
        verify.verify_file(directory, uuid, entry, progress=progress, sink=sink)
        sink.flush()
        os.fsync(sink.fileno())


def _write_new(dest: Path, relpath: str, data: bytes | bytearray) -> None:
    target = dest / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    write_durably(target, data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _advance(progress: Progress | None, n: int) -> None:
    if progress is not None and n:
        progress(n)
