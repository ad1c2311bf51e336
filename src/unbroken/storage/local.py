"""Local filesystem storage: publish by fsync + rename of a hidden staging directory.

Commit protocol (DESIGN.md): files are written into ``.tmp-<name>-<host>-<pid>`` beside the
final directory; every file is fsynced; the manifest is written and fsynced last; the staging
directory is fsynced and renamed to its final name; the parent directory is fsynced so that
the rename itself survives a power loss.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
from pathlib import Path
from typing import BinaryIO

from .._proc import pid_alive as _pid_alive
from ..errors import ConfigError, StorageError
from .base import Storage

_STAGING_PREFIX = ".tmp-"
#: A staging directory of another host (shared filesystem) is only removed when this old.
_FOREIGN_STALE_SECONDS = 24 * 3600


def fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file or directory by path."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(action: str, path: Path | str, exc: OSError) -> StorageError:
    """Wrap an OSError into a StorageError whose message says what failed and what to do."""
    hint = ""
    if exc.errno == errno.ENOSPC:
        hint = " (the disk is full: free space or point the run at another storage)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = " (no permission: check the owner and mode of the folder)"
    err = StorageError(exc.errno, f"cannot {action} {path}: {exc.strerror or exc}{hint}")
    err.__cause__ = exc
    return err


class LocalStorage(Storage):
    """Directories under a local (or shared POSIX) folder ``root``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.location = str(self.root)
        self._host = socket.gethostname()

    # -- writing -----------------------------------------------------------------------------
    def stage(self, name: str) -> Path:
        _check_name(name)
        staged = self.root / f"{_STAGING_PREFIX}{name}-{self._host}-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staged.mkdir()
        except OSError as exc:
            raise storage_error("create staging directory", staged, exc) from exc
        return staged

    def publish(self, staged: Path, name: str, manifest_name: str, manifest: bytes) -> None:
        _check_name(name)
        final = self.root / name
        try:
            if final.exists():
                raise StorageError(errno.EEXIST, f"cannot publish {final}: it exists already")
            for path in _files_below(staged):
                fsync_path(path)
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

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error("list", self.root, exc) from exc
        return [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]

    def read_bytes(self, name: str, relpath: str) -> bytes:
        with self.open(name, relpath) as f:
            try:
                return f.read()
            except OSError as exc:
                raise storage_error("read", self.file_path(name, relpath), exc) from exc

    def open(self, name: str, relpath: str) -> BinaryIO:
        path = self.file_path(name, relpath)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise storage_error("open", path, exc) from exc
        try:
            return os.fdopen(fd, "rb")
        except OSError as exc:  # EISDIR: the path is a folder
            os.close(fd)
            raise storage_error("open", path, exc) from exc

    def file_path(self, name: str, relpath: str) -> Path:
        """The path of one file; ``relpath`` must already be validated as relative and inside."""
        _check_name(name)
        return self.root / name / relpath

    def local_dir(self, name: str) -> Path | None:
        _check_name(name)
        return self.root / name

    def download(self, name: str, dest: Path) -> Path:
        src = self.local_dir(name)
        try:
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        except OSError as exc:
            raise storage_error("copy", src, exc) from exc
        return dest

    def delete(self, name: str) -> None:
        _check_name(name)
        target = self.root / name
        # Rename first so that a reader never sees a half-deleted directory.
        doomed = self.root / f"{_STAGING_PREFIX}deleting-{name}-{self._host}-{os.getpid()}"
        try:
            os.rename(target, doomed)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise storage_error("delete", target, exc) from exc
        shutil.rmtree(doomed, ignore_errors=True)

    def clean_stale(self) -> list[str]:
        removed = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return removed
        for entry in entries:
            if entry.name.startswith(_STAGING_PREFIX) and self._is_stale(entry):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def _is_stale(self, entry: os.DirEntry) -> bool:
        host, _, pid = entry.name.rpartition("-")
        if host.endswith("-" + self._host) and pid.isdigit():
            return int(pid) != os.getpid() and not _pid_alive(int(pid))
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            return False
        return age > _FOREIGN_STALE_SECONDS


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("..",):
        raise ConfigError(f"invalid storage directory name {name!r}")


def write_durably(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) with ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _files_below(root: Path):
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            yield Path(dirpath) / f


def _dirs_below(root: Path):
    subdirs = [Path(dirpath) for dirpath, _d, _f in os.walk(root)]
    return reversed(subdirs)  # children before parents

