"""Write a State into a checkpoint directory, and read it back, verifying as it reads.

Files: ``state.json`` (the tree, with tensor placeholders) and ``tensors.safetensors`` (every
tensor and array, safetensors layout). The tensor file is read once: the same pass fills the
buffer the tensors view and computes the checksum, so verifying costs no second read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CorruptCheckpoint, StorageError, TensorFileError
from ..storage.local import storage_error
from . import arrays, checksum, codec, tensorfile
from .manifest import FileEntry, Manifest
from .state import State
from .store import check_entry

STATE_JSON = "state.json"
TENSORS_FILE = "tensors.safetensors"
STATE_FORMAT = "unbroken-state"


@dataclasses.dataclass
class Written:
    """What a write produced: manifest entries already checksummed, and whether pickle was used."""

    entries: dict[str, FileEntry]
    needs_pickle: bool


def capture(state: State) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Encode a State: ``(json tree, tensors by key, used pickle)``. Tensors are live references."""
    encoder = codec.Encoder(allow_pickle=state.allow_pickle)
    tree = state.capture(encoder)
    return {"format": STATE_FORMAT, "version": 1, **tree}, encoder.tensors, encoder.used_pickle


def write(directory: Path, tree: dict[str, Any], tensors: dict[str, Any], needs_pickle: bool) -> Written:
    """Write the tree and the tensors into ``directory`` (files fsynced); return their entries."""
    plan = [(key, *arrays.describe(value, key)) for key, value in tensors.items()]
    header_bytes, header = tensorfile.layout(plan, {"format": "pt", "producer": "unbroken"})
    buffers = {key: arrays.host_bytes(value) for key, value in tensors.items()}
    try:
        tensor_crc = tensorfile.write(directory / TENSORS_FILE, header_bytes, header, buffers)
        json_bytes = json.dumps(tree, separators=(",", ":")).encode()
        json_crc = _write_small(directory / STATE_JSON, json_bytes)
    except OSError as exc:
        raise storage_error("write checkpoint files in", directory, exc) from exc
    return Written(
        {
            TENSORS_FILE: FileEntry(TENSORS_FILE, header.file_size, tensor_crc),
            STATE_JSON: FileEntry(STATE_JSON, len(json_bytes), json_crc),
        },
        needs_pickle,
    )


def read(directory: Path, manifest: Manifest, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Read, verify and decode a State tree from a checkpoint directory.

    Raises :class:`CorruptCheckpoint` when any byte disagrees with the manifest.
    """
    entries = {f.path: f for f in manifest.files}
    if STATE_JSON not in entries:
        raise CorruptCheckpoint(
            f"checkpoint {manifest.uuid} holds no {STATE_JSON}: it was not written from a State "
            "(restore it with restore_path instead)"
        )
    tree = _load_json(directory, manifest.uuid, entries[STATE_JSON])
    tensors = _load_tensors(directory, manifest.uuid, entries.get(TENSORS_FILE))
    views: dict[str, Any] = {}

    def tensor_of(key: str, kind: str) -> Any:
        if key not in tensors:
            raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: state refers to a missing tensor {key!r}")
        buffer, entry = tensors[key]
        views[key] = arrays.from_bytes(buffer, entry.dtype, entry.shape, kind)
        return views[key]

    if not isinstance(tree, dict) or tree.get("format") != STATE_FORMAT:
        raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: {STATE_JSON} is not an unbroken state file")
    return codec.decode(tree, tensor_of, allow_pickle=allow_pickle)


def _load_json(directory: Path, uuid: str, entry: FileEntry) -> Any:
    data = _read_file(directory, uuid, entry)
    check_entry(uuid, entry, len(data), checksum.to_hex(checksum.update(0, data)))
    try:
        return json.loads(data)
    except ValueError as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {entry.path} is not JSON: {exc}") from None


def _load_tensors(directory: Path, uuid: str, entry: FileEntry | None) -> dict[str, tuple[memoryview, Any]]:
    if entry is None:
        return {}
    data = _read_file(directory, uuid, entry)
    check_entry(uuid, entry, len(data), checksum.to_hex(checksum.update(0, data)))
    try:
        header = tensorfile.parse_header(data, len(data))
    except TensorFileError as exc:
        raise TensorFileError(f"checkpoint {uuid}: {entry.path}: {exc}") from None
    view = memoryview(data)
    return {e.name: (view[header.data_start + e.begin: header.data_start + e.end], e) for e in header.entries}


def _read_file(directory: Path, uuid: str, entry: FileEntry) -> bytearray:
    """Read a whole file into a new buffer; size mismatches are corruption, not I/O errors."""
    path = directory / entry.path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {uuid}: file {entry.path} is missing") from None
    except OSError as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: cannot open {entry.path}: {exc}") from None
    try:
        size = os.fstat(fd).st_size
        if size != entry.size:
            raise CorruptCheckpoint(
                f"checkpoint {uuid}: file {entry.path} has {size} bytes, the manifest says {entry.size} (truncated?)"
            )
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            n = os.readv(fd, [view[done:]])
            if n == 0:
                raise CorruptCheckpoint(f"checkpoint {uuid}: file {entry.path} ended early")
            done += n
        return buffer
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot read {path}: {exc}") from exc
    finally:
        os.close(fd)


def _write_small(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return checksum.to_hex(checksum.update(0, data))


def restore(state: State, directory: Path, manifest: Manifest, *, allow_pickle: bool = False,
            strict: bool = True) -> None:
    """Read a checkpoint and load it into ``state``."""
    if manifest.needs_pickle and not allow_pickle:
        from ..errors import PickleNotAllowed
        raise PickleNotAllowed(
            f"checkpoint {manifest.uuid} holds pickled Python objects; restoring them executes code "
            "from the checkpoint. Pass allow_pickle=True only if you trust where it came from"
        )
    state.apply(read(directory, manifest, allow_pickle=allow_pickle), strict=strict)
