"""Write a State into a checkpoint directory, and read it back, verifying as it reads.

Files: ``state.json`` (the tree, with tensor placeholders) and ``tensors.safetensors`` (every
tensor and array, safetensors layout). Writers: :func:`write` from the live tensors (the
caller is blocked anyway), :func:`write_snapshot` from a :class:`~.snapshot.Snapshot` (the
asynchronous path). The tensor file is read once, straight into the State's own tensors
where they fit (:mod:`.reader`); the same pass computes the checksum, so verifying costs no
second read, and a checkpoint that fails verification leaves the State untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptCheckpoint, StateMismatch, StorageError
from ...storage.local import storage_error, write_durably
from ..format import arrays
from ..format import checksum
from ..format import codec
from ..io import reader
from ..io import writer
from ..format.manifest import FileEntry, Manifest
from ..io.snapshot import Snapshot, encode_json, plan
from .state import State, _kind as kind_of
from ..store.catalog import check_entry

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
    """Write the tree and the tensors into ``directory`` (files fsynced); return their entries.

    The synchronous path: bytes go from the live tensors through two small bounce buffers
    (see :func:`.writer.write_streamed`), so no state-sized copy is made.
    """
    header_bytes, header = plan(tensors)
    segments = (arrays.host_bytes(tensors[e.name]) for e in header.entries)
    try:
        tensor_crc = writer.write_streamed(directory / TENSORS_FILE, header_bytes, segments, header.file_size)
        json_bytes = encode_json(tree)
        json_crc = _write_small(directory / STATE_JSON, json_bytes)
    except OSError as exc:
        raise storage_error("write checkpoint files in", directory, exc) from exc
    return Written(
        {
            TENSORS_FILE: FileEntry(TENSORS_FILE, header.file_size, checksum.to_hex(tensor_crc)),
            STATE_JSON: FileEntry(STATE_JSON, len(json_bytes), json_crc),
        },
        needs_pickle,
    )


def write_snapshot(directory: Path, snapshot: Snapshot) -> Written:
    """Write a snapshot's tensor file (direct I/O where possible) and JSON, fsynced; return their entries."""
    try:
        tensor_crc = writer.write_image(directory / TENSORS_FILE, snapshot.image.array, snapshot.file_size)
        json_crc = _write_small(directory / STATE_JSON, snapshot.json_bytes)
    except OSError as exc:
        raise storage_error("write checkpoint files in", directory, exc) from exc
    return Written(
        {
            TENSORS_FILE: FileEntry(TENSORS_FILE, snapshot.file_size, checksum.to_hex(tensor_crc)),
            STATE_JSON: FileEntry(STATE_JSON, len(snapshot.json_bytes), json_crc),
        },
        snapshot.needs_pickle,
    )


def read(directory: Path, manifest: Manifest, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Read, verify and decode a State tree from a checkpoint directory (tensors in a new buffer).

    Raises :class:`CorruptCheckpoint` when any byte disagrees with the manifest.
    """
    tree = _load_tree(directory, manifest)
    loaded = reader.read_tensors(directory / TENSORS_FILE, manifest.uuid, _entries(manifest).get(TENSORS_FILE), {})
    return codec.decode(tree, loaded.tensor_of(manifest.uuid), allow_pickle=allow_pickle)


def _entries(manifest: Manifest) -> dict[str, FileEntry]:
    return {f.path: f for f in manifest.files}


def _load_tree(directory: Path, manifest: Manifest) -> dict[str, Any]:
    entries = _entries(manifest)
    if STATE_JSON not in entries:
        raise CorruptCheckpoint(
            f"checkpoint {manifest.uuid} holds no {STATE_JSON}: it was not written from a State "
            "(restore it with restore_path instead)"
        )
    tree = _load_json(directory, manifest.uuid, entries[STATE_JSON])
    if not isinstance(tree, dict) or tree.get("format") != STATE_FORMAT:
        raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: {STATE_JSON} is not an unbroken state file")
    return tree


def in_place_targets(state: State) -> dict[str, Any]:
    """The tensors and arrays ``state`` holds now, by the keys a capture would give them.

    A restore reads a checkpoint's bytes straight into these where dtype and shape match
    (module parameters and buffers, optimizer moments, plain tensors and arrays). Entries
    whose current value cannot be walked (opaque objects, failing ``state_dict()``) give none.
    """
    encoder = _TargetEncoder()
    for name, value in state._entries.items():
        kind = kind_of(value)
        if kind not in ("value", "state_dict"):
            continue  # generators: their state is rebuilt, never read into
        try:
            encoder.encode(value.state_dict() if kind == "state_dict" else value, name)
        except Exception:  # noqa: BLE001 - no targets from this entry; the restore still works
            continue
    return encoder.tensors


class _TargetEncoder(codec.Encoder):
    def _pickle(self, value: Any, path: str) -> Any:
        return None


def _tensor_kinds(tree: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__tensor__" in node:
                found[node["__tensor__"]] = node.get("kind", "numpy")
            else:
                stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _kind_of_tensor(value: Any) -> str:
    return "numpy" if isinstance(value, np.ndarray) else "torch"


def _load_json(directory: Path, uuid: str, entry: FileEntry) -> Any:
    data = _read_file(directory, uuid, entry)
    check_entry(uuid, entry, len(data), checksum.to_hex(checksum.update(0, data)))
    try:
        return json.loads(data)
    except ValueError as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {entry.path} is not JSON: {exc}") from None


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
    """Write a new file durably; return its CRC32C."""
    write_durably(path, data)
    return checksum.to_hex(checksum.update(0, data))


def restore(state: State, directory: Path, manifest: Manifest, *, allow_pickle: bool = False,
            strict: bool = True, in_place: bool = True) -> None:
    """Read a checkpoint and load it into ``state``.

    With ``in_place`` (the default) the tensor bytes go straight into the tensors ``state``
    already holds where they fit (see :func:`in_place_targets`), the others into one new
    buffer; entries are then applied as usual (``load_state_dict`` finds its own tensors
    already filled). Nothing of ``state`` changes unless the whole checkpoint verified and its
    entries fit ``state`` (names and kinds; see :mod:`.reader` for the contract).
    """
    if manifest.needs_pickle and not allow_pickle:
        from ...errors import PickleNotAllowed
        raise PickleNotAllowed(
            f"checkpoint {manifest.uuid} holds pickled Python objects; restoring them executes code "
            "from the checkpoint. Pass allow_pickle=True only if you trust where it came from"
        )
    tree = _load_tree(directory, manifest)
    _check_fits(state, tree, strict, manifest.uuid)
    targets = {}
    if in_place:
        kinds = _tensor_kinds(tree)
        targets = {k: v for k, v in in_place_targets(state).items() if kinds.get(k) == _kind_of_tensor(v)}
    loaded = reader.read_tensors(directory / TENSORS_FILE, manifest.uuid, _entries(manifest).get(TENSORS_FILE),
                                 targets)
    state.apply(codec.decode(tree, loaded.tensor_of(manifest.uuid), allow_pickle=allow_pickle), strict=strict)


def _check_fits(state: State, tree: dict[str, Any], strict: bool, uuid: str) -> None:
    """Raise StateMismatch before any byte is read into ``state`` if the entries do not fit it."""
    saved = tree.get("entries")
    if not isinstance(saved, dict):
        raise CorruptCheckpoint(f"checkpoint {uuid}: {STATE_JSON} has no entries")
    if strict and set(saved) != set(state):
        state.apply({"entries": saved}, strict=True)  # raises StateMismatch (its message) before applying
    for name, item in saved.items():
        kind = item.get("kind") if isinstance(item, dict) else None
        if name in state and kind != "value" and kind != kind_of(state[name]):
            raise StateMismatch(f"State entry {name!r} was saved as {kind}, but is now {kind_of(state[name])}")
