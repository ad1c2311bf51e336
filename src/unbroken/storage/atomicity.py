"""How a staged directory becomes visible at once: the commit protocol, swappable per backend.

A save is planned and finished in two steps, so that several writers (ranks) can put files
into one checkpoint and one of them commits it:

* :meth:`CommitProtocol.stage` (plan) gives a local directory for the files of ``name``;
  nothing in it is visible to readers.
* :meth:`CommitProtocol.put_staged` writes one file of a staged checkpoint durably to its
  final medium (into the staged directory locally; straight to the object store remotely).
* :meth:`CommitProtocol.finish` (one committer, after every writer is done) makes the files
  durable, writes the manifest last and publishes the directory atomically.

Local filesystems publish by renaming a hidden staging directory (:class:`RenameCommit`); an
object store, where rename is not atomic, uploads the files and then the manifest, which is
the commit marker. Temporary entries are recognised by :meth:`CommitProtocol.is_temporary`
and removed by :meth:`CommitProtocol.clean_stale` once their writer is gone.
"""

from __future__ import annotations

import abc
import errno
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable

from .._proc import pid_alive
from ..errors import ConfigError, StorageError
from .fsio import fsync_path, storage_error, write_durably

#: Prefix of every temporary entry (staging and being-deleted directories) in a store's root.
TEMPORARY_PREFIX = ".tmp-"
#: A staging directory of another host (shared filesystem) is only removed when this old.
FOREIGN_STALE_SECONDS = 24 * 3600


class CommitProtocol(abc.ABC):
    """Stage, finish (publish atomically), discard; recognise and clean temporaries."""

    @abc.abstractmethod
    def stage(self, name: str) -> Path:
        """Create and return an empty local directory for the files of ``name`` (invisible to readers)."""

    @abc.abstractmethod
    def put_staged(self, staged: Path, relpath: str, data: bytes | memoryview) -> None:
        """Write one file ``relpath`` (relative, ``/``-separated) of the staged checkpoint durably.

        Blocks the calling thread until the bytes are durable on the checkpoint's final medium;
        any thread, several at once for different files. The file is part of what
        :meth:`finish` publishes, but need not appear in the local ``staged`` directory.
        Raises ConfigError for an unsafe or reserved ``relpath``, StorageError on I/O errors.
        """

    @abc.abstractmethod
    def finish(self, staged: Path, name: str, manifest_name: str, manifest: bytes,
               unsynced: Iterable[str] = ()) -> None:
        """Publish ``staged`` as ``name`` with ``manifest`` written last; one caller per checkpoint.

        Files listed in ``unsynced`` (relative paths) are made durable first; the others were
        made durable by their writer. On return everything is durable and visible; on error
        nothing is visible and the staged files are discarded. Raises
        :class:`~unbroken.errors.StorageError` on I/O errors and when ``name`` exists already.
        """

    @abc.abstractmethod
    def discard(self, staged: Path) -> None:
        """Delete a staged directory that will not be published. Never raises for missing paths."""

    @staticmethod
    def is_temporary(entry_name: str) -> bool:
        """True for entries readers must ignore (staging, being deleted)."""
        return entry_name.startswith(TEMPORARY_PREFIX)

    @abc.abstractmethod
    def stale(self) -> list[str]:
        """Temporary entries whose writer is gone (nothing is removed)."""

    @abc.abstractmethod
    def clean_stale(self) -> list[str]:
        """Remove the entries :meth:`stale` lists; return their names."""


class RenameCommit(CommitProtocol):
    """Local (or shared POSIX) folder: fsync the files, write the manifest, rename, fsync the parent.

    Staging directories are ``.tmp-<name>-<host>-<pid>`` beside the final directory, so a
    writer that died is recognised by its host and pid.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self._host = socket.gethostname()

    def stage(self, name: str) -> Path:
        check_entry_name(name)
        staged = self.root / f"{TEMPORARY_PREFIX}{name}-{self._host}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staged.mkdir()
        except OSError as exc:
            raise storage_error("create staging directory", staged, exc) from exc
        return staged

    def put_staged(self, staged: Path, relpath: str, data: bytes | memoryview) -> None:
        """Create ``staged/relpath`` (with its folders) with ``data`` and fsync it."""
        path = Path(staged) / check_relpath(relpath)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(path, data)
        except OSError as exc:
            raise storage_error("write", path, exc) from exc

    def finish(self, staged: Path, name: str, manifest_name: str, manifest: bytes,
               unsynced: Iterable[str] = ()) -> None:
        check_entry_name(name)
        final = self.root / name
        try:
            if final.exists():
                raise StorageError(errno.EEXIST, f"cannot publish {final}: it exists already")
            for rel in unsynced:
                fsync_path(staged / rel)
            write_durably(staged / manifest_name, manifest)
            for sub in _dirs_below(staged):
                fsync_path(sub, directory=True)
            os.rename(staged, final)
            fsync_path(self.root, directory=True)
        except StorageError:
            self.discard(staged)
            raise
        except OSError as exc:
            self.discard(staged)
            raise storage_error("publish checkpoint", final, exc) from exc

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def doomed(self, name: str) -> Path:
        """Where a directory is renamed before it is removed (a temporary entry of this process)."""
        return self.root / f"{TEMPORARY_PREFIX}deleting-{name}-{self._host}-{os.getpid()}"

    def stale(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        return [e.name for e in entries if self.is_temporary(e.name) and self._is_stale(e)]

    def clean_stale(self) -> list[str]:
        removed = self.stale()
        for name in removed:
            shutil.rmtree(self.root / name, ignore_errors=True)
        return removed

    def _is_stale(self, entry: os.DirEntry) -> bool:
        host, _, pid = entry.name.rpartition("-")
        if host.endswith("-" + self._host) and pid.isdigit():
            return int(pid) != os.getpid() and not pid_alive(int(pid))
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            return False
        return age > FOREIGN_STALE_SECONDS


def check_entry_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is a plain, visible directory name."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("..",):
        raise ConfigError(f"invalid storage directory name {name!r}")


def unsafe_relpath(relpath: str) -> bool:
    """True unless ``relpath`` is a plain relative ``/``-separated path that stays inside its folder.

    Unsafe: empty, absolute, ``.``/``..``/empty parts, backslashes, NUL characters.
    """
    return (not isinstance(relpath, str) or not relpath or relpath.startswith("/") or "\\" in relpath
            or "\0" in relpath or any(part in ("", ".", "..") for part in relpath.split("/")))


def check_relpath(relpath: str) -> str:
    """Return ``relpath`` if it is safe (see :func:`unsafe_relpath`), else raise ConfigError."""
    if unsafe_relpath(relpath):
        raise ConfigError(f"invalid file path {relpath!r} in a checkpoint: use a relative path with '/' "
                          "separators and no '.', '..' or empty parts")
    return relpath


def _dirs_below(root: Path):
    subdirs = [Path(dirpath) for dirpath, _d, _f in os.walk(root)]
    return reversed(subdirs)  # children before parents
