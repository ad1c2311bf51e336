"""Durable local file operations, and the one translation of OS errors into StorageError."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import StorageError


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


def fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file or directory by path."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
