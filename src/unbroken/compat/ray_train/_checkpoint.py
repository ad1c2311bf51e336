"""``Checkpoint``: Ray Train's handle on a directory of checkpoint files.

Two kinds behind one surface:

* a *local* checkpoint (``Checkpoint.from_directory(d)``): the folder a worker just wrote and
  hands to ``report()``; ``as_directory()`` yields it as is;
* a *stored* checkpoint (from ``get_checkpoint()`` or ``Result.checkpoint``): a committed unbroken
  checkpoint of a trial. ``as_directory()`` holds a read lease (no retention deletes it during the
  block), verifies every file's checksum and yields the local folder (read-only: do not modify
  it); ``to_directory()`` copies the verified files listed in its manifest (never the manifest,
  never a path outside the checkpoint) into a folder of yours. A corrupt checkpoint raises
  :class:`~unbroken.errors.CorruptCheckpoint`.

Metadata (``get_metadata``/``set_metadata``/``update_metadata``) is a JSON file ``.metadata.json``
in the folder, as in Ray; a stored checkpoint's metadata is read-only (committed checkpoints
never change).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from ...errors import CheckpointError, ConfigError

METADATA_FILE = ".metadata.json"


@dataclasses.dataclass(frozen=True)
class StoredRef:
    """Which committed checkpoint: the home (experiment folder), experiment, trial number and uuid."""

    home: str
    experiment: str
    trial: int
    uuid: str


#: ``opener(ref) -> context manager yielding (verified folder, relative file paths)``; set by the worker
#: session (which reads through its run) and defaulted to reading the trial's store directly.
Opener = Callable[[StoredRef], ContextManager[tuple[Path, list[str]]]]


class Checkpoint:
    """A directory of checkpoint files; see the module docstring. Any thread."""

    def __init__(self, path: str | os.PathLike, *, stored: StoredRef | None = None, opener: Opener | None = None):
        self.path = str(path)
        self._stored = stored
        self._opener = opener

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> "Checkpoint":
        """A checkpoint of the files in the local folder ``path`` (ConfigError when it is not a folder)."""
        if not Path(path).is_dir():
            raise ConfigError(f"Checkpoint.from_directory({str(path)!r}): not a directory; write the checkpoint "
                              "files into a folder first")
        return cls(Path(path).resolve())

    @property
    def uuid(self) -> str | None:
        """The unbroken checkpoint id of a stored checkpoint (None for a local one)."""
        return self._stored.uuid if self._stored else None

    def __repr__(self) -> str:
        return f"Checkpoint(path={self.path}{', uuid=' + self.uuid if self.uuid else ''})"

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        """Yield a local folder with the checkpoint's files (verified, leased for the block, if stored)."""
        if self._stored is None:
            yield self.path
            return
        with self._open() as (folder, _files):
            yield str(folder)

    def to_directory(self, path: str | os.PathLike | None = None) -> str:
        """Copy the checkpoint's files into ``path`` (default: a new temporary folder); return that folder."""
        dest = Path(path).expanduser() if path is not None else Path(tempfile.mkdtemp(prefix="checkpoint_"))
        dest.mkdir(parents=True, exist_ok=True)
        if self._stored is None:
            if Path(self.path).resolve() != dest.resolve():
                shutil.copytree(self.path, dest, symlinks=True, dirs_exist_ok=True)
            return str(dest)
        with self._open() as (folder, files):
            for rel in files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, dest / rel, follow_symlinks=False)
        return str(dest)

    def get_metadata(self) -> dict[str, Any]:
        """The JSON metadata saved with the checkpoint ({} when none)."""
        with self.as_directory() as folder:
            path = Path(folder) / METADATA_FILE
            return json.loads(path.read_text()) if path.is_file() else {}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the metadata of a local checkpoint; CheckpointError for a stored one."""
        if self._stored is not None:
            raise CheckpointError(f"checkpoint {self.uuid} is committed and cannot change; set metadata before "
                                  "report(), on Checkpoint.from_directory(...)")
        try:
            text = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
        (Path(self.path) / METADATA_FILE).write_text(text)

    def update_metadata(self, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into a local checkpoint's metadata."""
        self.set_metadata({**self.get_metadata(), **metadata})

    def _open(self) -> ContextManager[tuple[Path, list[str]]]:
        from ._stored import open_from_store  # noqa: PLC0415 - the index and store only when needed

        return (self._opener or open_from_store)(self._stored)
