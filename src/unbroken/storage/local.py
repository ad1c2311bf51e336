"""Local filesystem storage (also a shared POSIX filesystem): published by :class:`.RenameCommit`."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Hashable

from .atomicity import RenameCommit, check_entry_name
from .base import Storage
from .fsio import storage_error
from .locks import ReadLeases


class LocalStorage(Storage):
    """Directories under a local (or shared POSIX) folder ``root``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.location = str(self.root)
        self.commit = RenameCommit(self.root)
        self.leases = ReadLeases(self.root)

    def names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error("list", self.root, exc) from exc
        return [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]

    def change_token(self) -> Hashable | None:
        try:
            st = os.stat(self.root)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_nlink)

    def read_bytes(self, name: str, relpath: str) -> bytes:
        with self.open(name, relpath) as f:
            try:
                return f.read()
            except OSError as exc:
                raise storage_error("read", self.file_path(name, relpath), exc) from exc

    def open(self, name: str, relpath: str) -> BinaryIO:
        """Open a regular file without following a link and without blocking on a FIFO."""
        path = self.file_path(name, relpath)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise storage_error("open", path, exc) from exc
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(21 if stat.S_ISDIR(mode) else 22, "not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except OSError as exc:
            os.close(fd)
            raise storage_error("open", path, exc) from exc

    def file_path(self, name: str, relpath: str) -> Path:
        """The path of one file; ``relpath`` must already be validated as relative and inside."""
        check_entry_name(name)
        return self.root / name / relpath

    def local_dir(self, name: str) -> Path | None:
        check_entry_name(name)
        return self.root / name

    def materialize(self, name: str) -> Path:
        """The directory itself (no copy); StorageError ENOENT if it is not a published directory."""
        path = self.local_dir(name)
        if not path.is_dir() or path.is_symlink():
            cause = FileNotFoundError(errno.ENOENT, "no such directory", str(path))
            raise storage_error("materialize", path, cause) from cause
        return path

    def download(self, name: str, dest: Path) -> Path:
        src = self.local_dir(name)
        try:
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        except OSError as exc:
            raise storage_error("copy", src, exc) from exc
        return dest

    def delete(self, name: str) -> None:
        check_entry_name(name)
        target = self.root / name
        doomed = self.commit.doomed(name)  # rename first: a reader never sees a half-deleted directory
        try:
            os.rename(target, doomed)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise storage_error("delete", target, exc) from exc
        shutil.rmtree(doomed, ignore_errors=True)
