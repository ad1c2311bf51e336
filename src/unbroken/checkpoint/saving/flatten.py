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
from typing import Any, Callable, Iterator

from ...config import MANIFEST_NAME
from ...errors import CheckpointGone, CheckpointNotFound, CorruptCheckpoint, StorageError, TensorFileError
from ...storage.fsio import storage_error, write_durably
from ..format import checksum
from ..format import codec
from ..format import manifest as manifest_mod
from ..format import tensorfile
from ..format.manifest import FileEntry, Manifest
from ..format.tensorfile import Header, TensorEntry
from ..io import crcjoin
from ..io.snapshot import plan_subset
from ..store import verify
from .statefile import STATE_FORMAT, STATE_JSON, TENSORS_FILE

#: Bytes read from a source file at a time (the only buffer a flattening holds).
CHUNK = 8 << 20
#: ``resolve(uuid)`` -> the local folder of checkpoint ``uuid`` (default: beside the checkpoint read).
Resolve = Callable[[str], Path]
#: ``progress(n)``: ``n`` more bytes of the sources were read and checked.
Progress = Callable[[int], None]


@dataclasses.dataclass(frozen=True)
class _Part:
    """One tensor file that holds tensors of the checkpoint: its own (``user`` None, every tensor
    taken) or a file of checkpoint ``uuid`` that checkpoint ``user`` refers to (``names`` taken)."""

    directory: Path
    uuid: str
    entry: FileEntry
    names: frozenset[str] | None = None
    user: str | None = None

    @property
    def label(self) -> str:
        if self.user is None:
            return f"checkpoint {self.uuid}: file {self.entry.path}"
        return f"checkpoint {self.user} uses file {self.entry.path} of checkpoint {self.uuid}"


@dataclasses.dataclass
class _Source:
    """A part opened: descriptor, header (and its bytes), the tensors taken from it in file order."""

    part: _Part
    fd: int
    header: Header
    header_bytes: bytes
    taken: list[TensorEntry]


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
    with _opened_sources(directory, manifest, order, resolve) as sources:
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


def _write_flat(fd: int, dest: Path, sources: list[_Source], header_bytes: bytes, header: Header,
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
        with _named_for(source.part):
            _copy_source(source, fd, dest, places, crcs, progress)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise storage_error("write", dest, exc) from exc
    crc = checksum.update(0, header_bytes)
    for e in header.entries:
        crc = crcjoin.join(crc, crcs[e.name], e.nbytes)
    return crc


def _copy_source(source: _Source, out: int, dest: Path, places: dict[str, int], crcs: dict[str, int],
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


def _read_chunk(source: _Source, view: memoryview, position: int) -> int:
    try:
        n = os.preadv(source.fd, [view], position)
    except OSError as exc:
        raise _read_error(source.part, exc) from exc
    if n == 0:
        raise CorruptCheckpoint(f"checkpoint {source.part.uuid}: file {source.part.entry.path} ended early "
                                f"(at byte {position} of {source.part.entry.size})")
    return n


def _read_error(part: _Part, exc: OSError) -> StorageError | CorruptCheckpoint:
    """A read error: StorageError for the checkpoint's own file; a referenced file that cannot be
    read makes the checkpoint unusable (CorruptCheckpoint, as the store's verification says)."""
    if part.user is None:
        return storage_error("read", part.label, exc)
    return CorruptCheckpoint(f"cannot read it: {exc.strerror or exc}")


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


# -- the sources -----------------------------------------------------------------------------------
def _parts(directory: Path, manifest: Manifest, resolve: Resolve | None) -> Iterator[_Part]:
    """The checkpoint's own tensor file, then each file it refers to (resolving lazily: a
    download happens only when that part is reached)."""
    own = {f.path: f for f in manifest.files}.get(TENSORS_FILE)
    if own is not None:
        yield _Part(Path(directory), manifest.uuid, own)
    find = resolve or (lambda uuid: Path(directory).parent / uuid)
    for ref in manifest.refs:
        if ref.tensors:
            with _named_for(_Part(Path(directory), ref.uuid, ref.entry, user=manifest.uuid)):
                holder = Path(find(ref.uuid))
            yield _Part(holder, ref.uuid, ref.entry, frozenset(ref.tensors), manifest.uuid)


class _opened_sources:
    """Open every part, read its header, and check that together they hold exactly ``order``
    (each tensor once); closes every descriptor on exit."""

    def __init__(self, directory: Path, manifest: Manifest, order: list[str], resolve: Resolve | None):
        self.directory, self.manifest, self.order, self.resolve = Path(directory), manifest, order, resolve
        self.sources: list[_Source] = []

    def __enter__(self) -> list[_Source]:
        try:
            for part in _parts(self.directory, self.manifest, self.resolve):
                with _named_for(part, self.directory):
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


def _open(part: _Part, order: list[str]) -> _Source:
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
            raise _read_error(part, exc) from exc
        taken = [e for e in header.entries if part.names is None or e.name in part.names]
        if part.names is not None and len(taken) != len(part.names):
            missing = sorted(part.names - {e.name for e in taken})[:3]
            raise CorruptCheckpoint(f"checkpoint {part.uuid}: file {part.entry.path} does not hold the tensors "
                                    f"taken from it: {missing}")
        return _Source(part, fd, header, header_bytes, taken)
    except BaseException:
        os.close(fd)
        raise


def _check_holder_lists(part: _Part) -> None:
    """The referenced checkpoint's own manifest must list the file as the reference describes it."""
    try:
        data = verify.read_small_file(part.directory / MANIFEST_NAME, manifest_mod.MAX_MANIFEST_BYTES)
    except CheckpointNotFound:
        raise CheckpointGone(f"checkpoint {part.uuid} was deleted") from None
    holder = manifest_mod.parse(data, expected_uuid=part.uuid)
    if part.entry not in holder.files:
        raise CorruptCheckpoint(f"checkpoint {part.uuid}: its manifest does not list file {part.entry.path} "
                                f"with {part.entry.size} bytes and CRC32C {part.entry.crc32c}")


def _check_union(uuid: str, sources: list[_Source], order: list[str]) -> None:
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


class _named_for:
    """Inside it, an error about a referenced file names the checkpoint that uses it and the one
    that holds it; a referenced checkpoint that is gone is corrupt for its user (unless the user
    itself, in ``directory``, is gone: then CheckpointGone)."""

    def __init__(self, part: _Part, directory: Path | None = None):
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
        codec.tensor_refs(tree)  # every reference well-formed
    except CorruptCheckpoint as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {STATE_JSON}: {exc}") from None
    order: dict[str, None] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__tensor__" in node:
                order.setdefault(node["__tensor__"], None)
            else:
                stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return list(order)


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
