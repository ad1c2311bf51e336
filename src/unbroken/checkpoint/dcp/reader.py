"""``UnbrokenReader``: torch.distributed.checkpoint's storage reader for one committed unbroken checkpoint.

DCP drives it on every rank of the load. What it guarantees, beyond torch's file reader:

* ``.metadata`` is read verified against the manifest and unpickled by :mod:`.safemeta`, which
  builds DCP's metadata classes only, unless the caller passed ``allow_pickle=True``;
* every data file DCP names must be a file of the manifest: a path that is absolute, has ``..``,
  or is not listed raises :class:`UnsafePathError` / :class:`CorruptCheckpoint` before a byte is read;
  files are opened without following symbolic links (:mod:`unbroken.checkpoint.store.verify`);
* each rank verifies (size and CRC32C) every file its share of the load reads, in
  ``prepare_local_plan``, i.e. before DCP's planning collective: a corrupt file on any rank fails
  the load on every rank before any rank copies a byte into its state dict;
* non-tensor values (DCP's "bytes" items, e.g. an optimizer's ``param_groups``), which DCP's default
  planner loads with ``torch.load(weights_only=False)``, are first loaded with ``weights_only=True``:
  anything beyond plain containers, numbers, strings and tensors raises :class:`PickleNotAllowed`
  unless ``allow_pickle=True``. Tensors are loaded by torch with ``weights_only=True``.

Threads: DCP's (the caller's thread for ``dcp.load``).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.filesystem import FileSystem
from torch.distributed.checkpoint.planner import LoadItemType

from ...errors import CheckpointError, CorruptCheckpoint, PickleNotAllowed, UnsafePathError
from ..format.manifest import FileEntry, Manifest, check_relpath
from ..store import verify
from .safemeta import load_metadata

METADATA_NAME = ".metadata"


class _VerifiedFiles(FileSystem):
    """torch's file system, restricted to the verified files of one checkpoint, read-only."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root, self.uuid = Path(root), manifest.uuid
        self.entries: dict[str, FileEntry] = {entry.path: entry for entry in manifest.files}
        self.verified: set[str] = set()

    def entry(self, relpath: str) -> FileEntry:
        """The manifest entry of ``relpath``; UnsafePathError or CorruptCheckpoint if there is none."""
        check_relpath(relpath)
        entry = self.entries.get(relpath)
        if entry is None:
            raise CorruptCheckpoint(f"checkpoint {self.uuid}: DCP's metadata names {relpath!r}, "
                                    "which is not a file of the checkpoint's manifest")
        return entry

    def verify(self, relpath: str) -> None:
        """Check ``relpath``'s size and checksum once (CorruptCheckpoint, CheckpointGone, StorageError)."""
        if relpath not in self.verified:
            verify.verify_file(self.root, self.uuid, self.entry(relpath))
            self.verified.add(relpath)

    @contextlib.contextmanager
    def create_stream(self, path: str | os.PathLike, mode: str) -> Iterator[io.IOBase]:
        """Open a manifest file for reading, verified first (no link followed); anything else is refused."""
        if mode != "rb":
            raise CheckpointError(f"checkpoint {self.uuid} is committed: DCP may not open {path} for writing")
        relpath = self._relative(path)
        self.verify(relpath)
        fd = verify.open_entry(self.root, self.uuid, self.entry(relpath))
        with os.fdopen(fd, "rb") as stream:
            yield stream

    def _relative(self, path: str | os.PathLike) -> str:
        try:
            return PurePosixPath(os.fspath(path)).relative_to(PurePosixPath(os.fspath(self.root))).as_posix()
        except ValueError:
            raise UnsafePathError(f"checkpoint {self.uuid}: DCP asked for {os.fspath(path)!r}, "
                                  "outside the checkpoint directory; refusing it") from None

    def rename(self, path: Any, new_path: Any) -> None:
        raise CheckpointError(f"checkpoint {self.uuid} is committed: DCP may not rename files in it")

    def mkdir(self, path: Any) -> None:
        raise CheckpointError(f"checkpoint {self.uuid} is committed: DCP may not create folders in it")

    def rm_file(self, path: Any) -> None:
        raise CheckpointError(f"checkpoint {self.uuid} is committed: DCP may not delete files in it")


class _GuardedPlanner:
    """Passes everything to DCP's load planner, but checks a "bytes" item loads without arbitrary pickle."""

    def __init__(self, planner: Any, uuid: str):
        self._planner, self._uuid = planner, uuid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._planner, name)

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        _check_plain(value, read_item, self._uuid)
        value.seek(0)
        self._planner.load_bytes(read_item, value)


def _check_plain(value: io.BytesIO, item: Any, uuid: str) -> None:
    """Raise PickleNotAllowed unless ``value`` loads with ``torch.load(weights_only=True)``."""
    try:
        torch.load(io.BytesIO(value.getbuffer()), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler refuses with various errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PickleNotAllowed(
            f"checkpoint {uuid}: the value {item.dest_index.fqn!r} is not plain data (torch.load with "
            f"weights_only=True refused it: {first}); pass allow_pickle=True only if you trust whoever "
            "wrote this checkpoint") from None


class UnbrokenReader(FileSystemReader):
    """Reads the committed checkpoint ``manifest`` from its local folder ``root``; see the module docstring.

    Reads, verifies and unpickles ``.metadata`` when made: raises CorruptCheckpoint, PickleNotAllowed,
    CheckpointGone or StorageError then, and CheckpointError for a checkpoint DCP did not write.
    """

    def __init__(self, root: Path, manifest: Manifest, *, allow_pickle: bool = False):
        super().__init__(Path(root))
        self.fs = _VerifiedFiles(Path(root), manifest)
        self.manifest, self.allow_pickle = manifest, allow_pickle
        if METADATA_NAME not in self.fs.entries:
            raise CheckpointError(f"checkpoint {manifest.uuid} was not written by torch.distributed.checkpoint "
                                  f"(it has no {METADATA_NAME}); restore it with run.restore or restore_path")
        self._metadata = self._read_metadata()

    def reset(self, checkpoint_id: Any = None) -> None:
        """A new load of the same checkpoint (DCP calls this first); another checkpoint_id is refused."""
        if checkpoint_id and Path(checkpoint_id) != self.fs.root:
            raise CheckpointError(f"this reader reads checkpoint {self.manifest.uuid} only; pass checkpoint_id=None")
        super().reset()

    def read_metadata(self) -> Any:  # no **kwargs: DCP must not fall back to rank-local metadata
        """The metadata read (verified, safely unpickled) when this reader was made, with a new load id."""
        self._metadata.storage_meta = self._metadata.storage_meta or _storage_meta()
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata

    def _read_metadata(self) -> Any:
        """Verify and unpickle ``.metadata`` (DCP would turn an error in read_metadata into an AssertionError)."""
        data = verify.read_entry(self.fs.root, self.manifest.uuid, self.fs.entry(METADATA_NAME))
        self.fs.verified.add(METADATA_NAME)
        try:
            return load_metadata(bytes(data), allow_pickle=self.allow_pickle)
        except CheckpointError as exc:
            raise type(exc)(f"checkpoint {self.manifest.uuid}: {exc}") from None

    def set_up_storage_reader(self, metadata: Any, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Check that every file the metadata names is a manifest entry (UnsafePathError, CorruptCheckpoint)."""
        super().set_up_storage_reader(metadata, is_coordinator, *args, **kwargs)
        for info in self.storage_data.values():
            self.fs.entry(getattr(info, "relative_path", None))
            if not (isinstance(info.offset, int) and isinstance(info.length, int) and info.offset >= 0
                    and info.length >= 0):
                raise CorruptCheckpoint(f"checkpoint {self.manifest.uuid}: DCP's metadata has a bad offset or "
                                        f"length for {info.relative_path!r}")

    def prepare_local_plan(self, plan: Any) -> Any:
        """Verify every file this rank's share reads, and without ``allow_pickle`` check its non-tensor
        values load as plain data, before DCP's planning collective: a refusal on any rank stops every
        rank before a byte lands in a state dict."""
        for relpath in sorted({self.storage_data[item.storage_index].relative_path for item in plan.items}):
            self.fs.verify(relpath)
        if not self.allow_pickle:
            for item in plan.items:
                if item.type == LoadItemType.BYTE_IO:
                    _check_plain(self._item_bytes(item), item, self.manifest.uuid)
        return super().prepare_local_plan(plan)

    def _item_bytes(self, item: Any) -> io.BytesIO:
        info = self.storage_data[item.storage_index]
        with self.fs.create_stream(self.fs.concat_path(self.path, info.relative_path), "rb") as stream:
            view = self._slice_file(stream, info)
            raw = self.transforms.transform_load_stream(item, info.transform_descriptors or (), view)
            return io.BytesIO(raw.read(-1))

    def read_data(self, plan: Any, planner: Any) -> Any:
        """torch's read loop over the verified files; non-tensor values checked again (without allow_pickle)."""
        if not self.allow_pickle and any(item.type == LoadItemType.BYTE_IO for item in plan.items):
            planner = _GuardedPlanner(planner, self.manifest.uuid)
        return super().read_data(plan, planner)


def _storage_meta() -> Any:
    from torch.distributed.checkpoint.metadata import StorageMeta  # noqa: PLC0415

    return StorageMeta()
