"""Moving object bytes to and from local files: safe key paths, a streaming reader, ranged downloads.

All functions block the calling thread; downloads use a few helper threads of their own
(obstore releases the GIL while it waits, so ranges move in parallel).
"""

from __future__ import annotations

import concurrent.futures
import errno
import io
import os
from pathlib import Path
from typing import Callable

from ..errors import StorageError
from .atomicity import unsafe_relpath
from .fsio import storage_error
from .objclient import RANGE_SIZE, ObjectClient

#: Ranges of one object fetched at once by :func:`download_file`.
RANGE_CONCURRENCY = 8
#: Buffer of the reader :func:`open_object` returns (reads of this size or more bypass it and
#: go straight into the caller's buffer, in parallel ranges when large).
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
        self._fetch(self._pos, end, view)
        count, self._pos = end - self._pos, end
        return count

    def readall(self) -> bytes:
        if self._pos >= self._size:
            return b""
        out = bytearray(self._size - self._pos)
        self.readinto(out)
        return bytes(out)

    def _fetch(self, start: int, end: int, into: memoryview) -> None:
        try:
            fetch_ranges(self._client, self._key, start, end, self._etag, _into(into, start))
        except StorageError as exc:
            if exc.errno != errno.EEXIST:
                raise
            raise StorageError(errno.ESTALE, f"{self._client.where(self._key)} changed while it was read") from exc


def open_object(client: ObjectClient, key: str) -> io.BufferedReader:
    """Open one object for streaming binary reads (StorageError ENOENT if it does not exist)."""
    return io.BufferedReader(ObjectReader(client, key), buffer_size=READ_BUFFER)


def read_object(client: ObjectClient, key: str) -> bytes | bytearray:
    """The whole object: one GET when small, else parallel ranges of the version first seen.

    Objects over :data:`RANGE_SIZE` come back as a ``bytearray`` (no second copy). Raises
    StorageError (ENOENT with a FileNotFoundError cause when the object does not exist).
    """
    response = [client.call("read", key, lambda s: client.obs.get(s, key))]
    size, etag = int(response[0].meta["size"]), response[0].meta.get("e_tag")
    if size <= RANGE_SIZE:
        return bytes(client.call("read", key, lambda _s: response[0].bytes()))
    response.clear()  # closes the response: the rest comes in parallel ranges
    out = bytearray(size)
    fetch_ranges(client, key, 0, size, etag, _into(memoryview(out), 0))
    return out


def download_file(client: ObjectClient, key: str, size: int, dest: Path) -> None:
    """Write object ``key`` of ``size`` bytes into the new file ``dest``, in parallel ranges; fsync it.

    Raises StorageError for object-store and local errors (the partial file is left to the caller).
    """
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise storage_error("create", dest, exc) from exc
    try:
        if size:
            os.ftruncate(fd, size)
            etag = client.head(key).get("e_tag") if size > RANGE_SIZE else None
            fetch_ranges(client, key, 0, size, etag, lambda offset, data: _write_at(fd, data, offset))
        os.fsync(fd)
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error("write", dest, exc) from exc
    finally:
        os.close(fd)


def fetch_ranges(client: ObjectClient, key: str, start: int, end: int, etag: str | None,
                 sink: Callable[[int, memoryview], None]) -> None:
    """GET bytes ``[start, end)`` of ``key`` in ranges of at most :data:`RANGE_SIZE`, in parallel;
    hand each to ``sink(offset, data)`` (from a helper thread). With ``etag``, a changed object
    raises StorageError EEXIST; a short range raises EIO."""

    def one(offset: int) -> None:
        stop = min(end, offset + RANGE_SIZE)
        data = memoryview(client.get_range(key, offset, stop, etag)).cast("B")
        if data.nbytes != stop - offset:
            raise StorageError(errno.EIO, f"{client.where(key)}: short read at byte {offset}")
        sink(offset, data)

    offsets = range(start, end, RANGE_SIZE)
    if len(offsets) == 1:
        one(start)
        return
    with concurrent.futures.ThreadPoolExecutor(RANGE_CONCURRENCY, thread_name_prefix="unbroken-get") as pool:
        for future in [pool.submit(one, offset) for offset in offsets]:
            future.result()


def _into(view: memoryview, base: int) -> Callable[[int, memoryview], None]:
    """A sink that copies a range at object offset ``offset`` into ``view`` (which starts at ``base``)."""
    def sink(offset: int, data: memoryview) -> None:
        view[offset - base:offset - base + data.nbytes] = data
    return sink


def _write_at(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
