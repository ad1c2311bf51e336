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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import CorruptCheckpoint, PickleNotAllowed, StateMismatch
from ...storage.fsio import storage_error, write_durably
from ..format import arrays
from ..format import checksum
from ..format import codec
from ..io import reader
from ..io import writer
from ..format.manifest import FileEntry, FileRef, Manifest
from ..io.snapshot import Snapshot, encode_json, plan, plan_subset
from . import incremental
from .state import KINDS, State, _kind as kind_of
from ..store import verify

STATE_JSON = "state.json"
TENSORS_FILE = "tensors.safetensors"
STATE_FORMAT = "unbroken-state"


@dataclasses.dataclass
class Written:
    """What a write produced: manifest entries already checksummed, whether pickle was used, and
    the files of earlier checkpoints used instead of writing their bytes (incremental saves)."""

    entries: dict[str, FileEntry]
    needs_pickle: bool
    refs: tuple[FileRef, ...] = ()

    @property
    def bytes_written(self) -> int:
        return sum(e.size for e in self.entries.values())


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


def write_snapshot(directory: Path, snapshot: Snapshot, decided: incremental.Plan | None = None) -> Written:
    """Write a snapshot's tensor file (direct I/O where possible) and JSON, fsynced; return their entries.

    With an incremental ``decided`` plan only the tensors it names are written (into a smaller
    tensor file; none at all when every tensor is referred to) and its references are returned.
    Runs on the writer thread; blocks for the writes.
    """
    entries = {}
    try:
        if decided is None or not decided.incremental:
            tensor_crc = writer.write_image(directory / TENSORS_FILE, snapshot.image.array, snapshot.file_size)
            entries[TENSORS_FILE] = FileEntry(TENSORS_FILE, snapshot.file_size, checksum.to_hex(tensor_crc))
        elif decided.write:
            entries[TENSORS_FILE] = _write_part(directory / TENSORS_FILE, snapshot, decided.write)
        entries[STATE_JSON] = FileEntry(STATE_JSON, len(snapshot.json_bytes), _write_small(directory / STATE_JSON,
                                                                                           snapshot.json_bytes))
    except OSError as exc:
        raise storage_error("write checkpoint files in", directory, exc) from exc
    return Written(entries, snapshot.needs_pickle, decided.refs if decided is not None else ())


def _write_part(path: Path, snapshot: Snapshot, names: tuple[str, ...]) -> FileEntry:
    """Write a tensor file holding only the tensors ``names`` of the snapshot (copied from its image)."""
    by_name = snapshot.header.by_name
    header_bytes, header = plan_subset([(n, by_name[n].dtype, by_name[n].shape) for n in names])
    start = snapshot.header.data_start
    image = snapshot.image.array
    segments = (image[start + by_name[e.name].begin:start + by_name[e.name].end] for e in header.entries)
    crc = writer.write_streamed(path, header_bytes, segments, header.file_size)
    return FileEntry(TENSORS_FILE, header.file_size, checksum.to_hex(crc))


def upload_snapshot(put: Callable[[str, Any], None], snapshot: Snapshot) -> Written:
    """Send a snapshot's files straight to their final medium with ``put(relpath, bytes)`` (an
    object store: no local copy); the tensor file's checksum is computed beside the upload.

    ``put`` must make each file durable before it returns (see ``CommitProtocol.put_staged``).
    """
    image = snapshot.image.array[:snapshot.file_size]
    crc = writer.checksum_beside(image)
    put(TENSORS_FILE, memoryview(image))
    put(STATE_JSON, snapshot.json_bytes)
    return Written(
        {
            TENSORS_FILE: FileEntry(TENSORS_FILE, snapshot.file_size, checksum.to_hex(crc.result())),
            STATE_JSON: FileEntry(STATE_JSON, len(snapshot.json_bytes),
                                  checksum.to_hex(checksum.update(0, snapshot.json_bytes))),
        },
        snapshot.needs_pickle,
    )


#: ``resolve(uuid)`` -> the local folder of checkpoint ``uuid`` (where an incremental checkpoint's
#: referenced files are); by default the folder beside the checkpoint being read.
Resolve = Callable[[str], Path]


def read(directory: Path, manifest: Manifest, *, allow_pickle: bool = False,
         resolve: Resolve | None = None) -> dict[str, Any]:
    """Read, verify and decode a State tree from a checkpoint directory (tensors in a new buffer).

    Raises :class:`CorruptCheckpoint` when any byte disagrees with the manifest (or a file it
    refers to is missing or damaged).
    """
    return _read_and_decode(directory, manifest, _load_tree(directory, manifest), {}, allow_pickle, resolve)


def ref_sources(directory: Path, manifest: Manifest, resolve: Resolve | None = None) -> list[reader.Source]:
    """The files of earlier checkpoints an incremental checkpoint uses, as reader sources."""
    find = resolve or (lambda uuid: Path(directory).parent / uuid)
    return [reader.Source(find(r.uuid), r.uuid, r.entry, frozenset(r.tensors), user=manifest.uuid)
            for r in manifest.refs if r.tensors]


def _read_and_decode(directory: Path, manifest: Manifest, tree: dict[str, Any], targets: dict[str, Any],
                     allow_pickle: bool, resolve: Resolve | None = None) -> dict[str, Any]:
    """Read the tensor file (into ``targets`` where they fit) and decode ``tree`` with its tensors.

    The tree is decoded before any byte is written into a target: a tree that does not decode
    leaves them untouched.
    """
    uuid = manifest.uuid
    decoded: list[dict[str, Any]] = []

    def decode(loaded: reader.Loaded) -> None:
        try:
            decoded.append(codec.decode(tree, loaded.tensor_of(uuid), allow_pickle=allow_pickle))
        except CorruptCheckpoint as exc:
            raise type(exc)(f"checkpoint {uuid}: {STATE_JSON}: {exc}") from None

    reader.read_tensors(directory, uuid, _entries(manifest).get(TENSORS_FILE), targets, codec.tensor_refs(tree),
                        before_fill=decode, refs=ref_sources(directory, manifest, resolve))
    return decoded[0]


def written_from_state(manifest: Manifest) -> bool:
    """True if the checkpoint holds a state file (at its top, or in a rank's or the replicated folder of
    a sharded save): ``restore(state)`` reads only these; others come from ``store_path`` or DCP."""
    return any(f.path.rsplit("/", 1)[-1] == STATE_JSON and f.path.count("/") <= 1 for f in manifest.files)


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
    saved = tree.get("entries")
    if not isinstance(saved, dict) or not all(
            isinstance(item, dict) and item.get("kind") in KINDS and "data" in item for item in saved.values()):
        raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: {STATE_JSON} has no valid entries "
                                f"(each needs a kind among {sorted(KINDS)} and data)")
    try:
        codec.tensor_refs(tree)  # every tensor reference well-formed: later walks cannot fail
    except CorruptCheckpoint as exc:
        raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: {STATE_JSON}: {exc}") from None
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
    def encode(self, value: Any, path: str) -> Any:
        if isinstance(value, np.generic):
            # A numpy scalar is decoded from its value before targets are filled: never in place.
            array = np.asarray(value)
            array.flags.writeable = False
            return self._tensor(array, path)
        return super().encode(value, path)

    def _pickle(self, value: Any, path: str) -> Any:
        return None


def _kind_of_tensor(value: Any) -> str:
    return "numpy" if isinstance(value, np.ndarray) else "torch"


def _load_json(directory: Path, uuid: str, entry: FileEntry) -> Any:
    data = verify.read_entry(directory, uuid, entry)
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpoint(f"checkpoint {uuid}: {entry.path} is not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return out


def _write_small(path: Path, data: bytes) -> str:
    """Write a new file durably; return its CRC32C."""
    write_durably(path, data)
    return checksum.to_hex(checksum.update(0, data))


def restore(state: State, directory: Path, manifest: Manifest, *, allow_pickle: bool = False,
            strict: bool = True, in_place: bool = True, resolve: Resolve | None = None) -> None:
    """Read a checkpoint and load it into ``state``.

    With ``in_place`` (the default) the tensor bytes go straight into the tensors ``state``
    already holds where they fit (see :func:`in_place_targets`), the others into one new
    buffer; entries are then applied as usual (``load_state_dict`` finds its own tensors
    already filled). Nothing of ``state`` changes unless the whole checkpoint verified and its
    entries fit ``state`` (names and kinds; see :mod:`.reader` for the contract).
    """
    if manifest.needs_pickle and not allow_pickle:
        raise PickleNotAllowed(
            f"checkpoint {manifest.uuid} holds pickled Python objects; restoring them executes code "
            "from the checkpoint. Pass allow_pickle=True only if you trust where it came from"
        )
    tree = _load_tree(directory, manifest)
    _check_fits(state, tree, strict, manifest.uuid)
    targets = {}
    if in_place:
        kinds = codec.tensor_refs(tree)
        targets = {k: v for k, v in in_place_targets(state).items() if kinds.get(k) == _kind_of_tensor(v)}
    state.apply(_read_and_decode(directory, manifest, tree, targets, allow_pickle, resolve), strict=strict)


def _check_fits(state: State, tree: dict[str, Any], strict: bool, uuid: str) -> None:
    """Raise StateMismatch before any byte is read into ``state`` if the entries do not fit it."""
    saved = tree["entries"]
    if strict and set(saved) != set(state):
        state.apply({"entries": saved}, strict=True)  # raises StateMismatch (its message) before applying
    for name, item in saved.items():
        kind = item["kind"]
        if name in state and kind != "value" and kind != kind_of(state[name]):
            raise StateMismatch(f"State entry {name!r} was saved as {kind}, but is now {kind_of(state[name])}")
