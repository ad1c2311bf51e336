"""A checkpoint being written: what a save hands to :meth:`CheckpointStore.commit`.

The request (``steps_completed`` and metadata) is validated once, when the pending checkpoint
is created, before any byte is written; files written by unbroken's own writers arrive with
their entry (size and CRC32C computed while writing) and are already durable, so the commit
neither reads nor fsyncs them again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

from ...config import MANIFEST_NAME
from ...errors import ConfigError
from ...storage.fsio import storage_error
from ...tracking.values import check_steps  # the index stores it as a signed 64-bit integer
from ..format import checksum
from ..format import manifest as manifest_mod
from ..format.manifest import FileEntry, FileRef

__all__ = ["PendingCheckpoint", "check_metadata", "check_steps", "staged_entries"]

@dataclasses.dataclass
class PendingCheckpoint:
    """Files go into ``path``; nothing is visible until the store commits it.

    ``entries`` holds files whose writer already checksummed and fsynced them; any other
    file found in ``path`` at commit time is checksummed and fsynced by the commit.
    """

    uuid: str
    path: Path
    steps_completed: int
    metadata: dict[str, Any]
    entries: dict[str, FileEntry] = dataclasses.field(default_factory=dict)
    needs_pickle: bool = False
    refs: list[FileRef] = dataclasses.field(default_factory=list)

    def add_written(self, entries: dict[str, FileEntry], needs_pickle: bool = False,
                    refs: list[FileRef] | tuple[FileRef, ...] = ()) -> None:
        """Record files a writer made durable (with their checksums), and files of earlier
        checkpoints this one uses instead of writing them (incremental saves)."""
        self.entries.update(entries)
        self.needs_pickle = self.needs_pickle or needs_pickle
        self.refs.extend(refs)


def staged_entries(pending: PendingCheckpoint) -> tuple[list[FileEntry], list[str]]:
    """Every file of ``pending``: ``(entries, relpaths still to fsync)``.

    Files written by unbroken's writers come with their entry; any other file found in the
    staging folder (user code) is checksummed here and must still be fsynced by the commit.
    Files uploaded straight to an object store are known by their entry only.
    """
    local = _relpaths(pending.path)
    unsynced = [rel for rel in local if rel not in pending.entries]
    relpaths = sorted(set(local) | set(pending.entries))
    return [pending.entries.get(rel) or _entry_of(pending.path, rel) for rel in relpaths], unsynced


def _relpaths(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            mode = os.lstat(full).st_mode
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise ConfigError(f"cannot commit {rel}: symbolic links are not allowed in a checkpoint")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ConfigError(f"cannot commit {rel}: only regular files and folders are allowed")
            if stat.S_ISREG(mode):
                if rel == MANIFEST_NAME:
                    raise ConfigError(f"cannot commit: {MANIFEST_NAME} is a reserved file name")
                out.append(manifest_mod.check_relpath(rel))
    return sorted(out)


def _entry_of(root: Path, rel: str) -> FileEntry:
    try:
        size, crc = checksum.of_file(root / rel)
    except OSError as exc:
        raise storage_error("read", root / rel, exc) from exc
    return FileEntry(rel, size, crc)


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Return a JSON copy of ``metadata`` (a dict; None is {}), else raise ConfigError."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"checkpoint metadata must be a dict, not {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"checkpoint metadata must be JSON (no NaN, no objects): {exc}") from None
