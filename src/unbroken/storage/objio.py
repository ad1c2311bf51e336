"""Moving object bytes to and from local files: safe key paths, a streaming reader, ranged downloads.

All functions block the calling thread; downloads use a few helper threads of their own
(obstore releases the GIL while it waits, so ranges move in parallel).
"""

from __future__ import annotations

import concurrent.futures
import errno
import io
import os
from pathlib import Path, PurePosixPath

from ..errors import StorageError
from .atomicity import unsafe_relpath
from .fsio import storage_error
from .objclient import RANGE_SIZE, ObjectClient

#: Ranges of one object fetched at once by :func:`download_file`.
RANGE_CONCURRENCY = 8
#: Buffer of the reader :func:`open_object` returns (reads of this size or more bypass it).
READ_BUFFER = 4 * 1024 * 1024


def safe_relpath(relpath: str, where: str) -> str:
    """Return ``relpath`` if it is a plain relative POSIX path inside its folder, else raise StorageError.

    Refused: empty, absolute, ``.`` or ``..`` parts, empty parts, backslashes, NUL.
    """
    if unsafe_relpath(relpath):
        raise StorageError(errno.EINVAL, f"refusing unsafe object path {relpath!r} in {where}: "
                           "it is absolute, has '.', '..' or empty parts, or a backslash")
    return relpath


class ObjectReader(io.RawIOBase):
    """A seekable, read-only raw file over one object: each read is one ranged GET.

    The object's version (ETag) is fixed when opened: if the object is replaced meanwhile,
    reads raise StorageError ESTALE instead of mixing two versions. Wrap in a BufferedReader
    (as :func:`open_object` does). Not thread-safe (one file position).
    """

    def __init__(self, client: ObjectClient, key: str):
        super().__init__()
        meta = client.head(key)
        self._client, self._key = client, key
        self._size, self._etag = int(meta["size"]), meta.get("e_tag")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + view.nbytes)
        if end <= self._pos:
            return 0
        data = self._fetch(self._pos, end)
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        if self._pos >= self._size:
            return b""
        data = bytes(self._fetch(self._pos, self._size))
        self._pos += len(data)
        return data

    def _fetch(self, start: int, end: int):
        try:
            return self._client.get_range(self._key, start, end, self._etag)
        except StorageError as exc:
            if exc.errno != errno.EEXIST:
                raise
            raise StorageError(errno.ESTALE, f"{self._client.where(self._key)} changed while it was read") from exc


def open_object(client: ObjectClient, key: str) -> io.BufferedReader:
    """Open one object for streaming binary reads (StorageError ENOENT if it does not exist)."""
    return io.BufferedReader(ObjectReader(client, key), buffer_size=READ_BUFFER)


def download_file(client: ObjectClient, key: str, size: int, dest: Path) -> None:
    """Write object ``key`` of ``size`` bytes into the new file ``dest``, in parallel ranges; fsync it.

    Raises StorageError for object-store and local errors (the partial file is left to the caller).
    """
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise storage_error("create", dest, exc) from exc
    try:
        if size <= RANGE_SIZE:
            _write_at(fd, client.get(key) if size else b"", 0, dest)
        else:
            _download_ranges(client, key, size, fd, dest)
        os.fsync(fd)
    except OSError as exc:
        if isinstance(exc, StorageError):
            raise
        raise storage_error("write", dest, exc) from exc
    finally:
        os.close(fd)


def _download_ranges(client: ObjectClient, key: str, size: int, fd: int, dest: Path) -> None:
    os.ftruncate(fd, size)
    etag = client.head(key).get("e_tag")

    def one(start: int) -> None:
        end = min(size, start + RANGE_SIZE)
        data = client.get_range(key, start, end, etag)
        if len(data) != end - start:
            raise StorageError(errno.EIO, f"{client.where(key)}: short read at {start}")
        _write_at(fd, data, start, dest)

    with concurrent.futures.ThreadPoolExecutor(RANGE_CONCURRENCY, thread_name_prefix="unbroken-get") as pool:
        futures = [pool.submit(one, start) for start in range(0, size, RANGE_SIZE)]
        for future in futures:
            future.result()


def _write_at(fd: int, data, offset: int, dest: Path) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written

