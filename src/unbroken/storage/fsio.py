"""Durable local file operations, and the one translation of OS and object-store errors into StorageError."""

from __future__ import annotations

import errno
import os
import re
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


#: What to check, by errno, when an object store refuses or cannot be reached.
_OBJECT_HINTS = {
    errno.ENOENT: "",
    errno.EEXIST: "",
    errno.EACCES: " (access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the store's own "
                  "credentials, and that they may read and write this bucket and prefix)",
    errno.ENXIO: " (the bucket does not exist: create it, or check the URL, AWS_ENDPOINT_URL and AWS_REGION)",
    errno.ECONNREFUSED: " (cannot reach the object store: check AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP=true for "
                        "an http:// endpoint), the network, and that the server runs)",
    errno.ETIMEDOUT: " (the object store did not answer in time: check AWS_ENDPOINT_URL, the network and the server)",
    errno.EIO: "",
}
_XML_CODE = re.compile(r"<Code>(\w+)</Code>")


def object_store_error(action: str, url: str, exc: Exception) -> StorageError:
    """Wrap an exception of the object-store client (obstore) into a StorageError naming ``url``.

    The one place where obstore's errors are interpreted. The errno says what happened:
    ENOENT (no such object; ``__cause__`` is then a FileNotFoundError, as for local files, and
    only then),
    EEXIST (a create-only put was refused), EACCES (credentials), ENXIO (no such bucket),
    ECONNREFUSED / ETIMEDOUT (endpoint unreachable or silent), EIO (anything else).
    """
    code = _object_errno(exc)
    err = StorageError(code, f"cannot {action} {url}: {_first_line(exc)}{_OBJECT_HINTS[code]}")
    # Readers take a FileNotFoundError cause for "no such object": a missing bucket is not that.
    err.__cause__ = exc if code == errno.ENOENT or not isinstance(exc, FileNotFoundError) else OSError(str(exc))
    return err


def _object_errno(exc: Exception) -> int:
    kind = type(exc).__name__
    text = str(exc)
    xml_code = (_XML_CODE.search(text) or [None, ""])[1]
    if xml_code == "NoSuchBucket":
        return errno.ENXIO
    if isinstance(exc, FileNotFoundError) or kind == "NotFoundError":
        return errno.ENOENT
    if kind in ("AlreadyExistsError", "PreconditionError"):
        return errno.EEXIST
    if kind in ("PermissionDeniedError", "UnauthenticatedError") or xml_code in (
            "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or "403 Forbidden" in text:
        return errno.EACCES
    if "timed out" in text or "operation timed out" in text.lower():
        return errno.ETIMEDOUT
    if "error sending request" in text or "connect" in text.lower() and "error" in text.lower():
        return errno.ECONNREFUSED
    return errno.EIO


def _first_line(exc: Exception) -> str:
    """The useful head of an obstore message (no XML body, no debug dump), at most 300 characters."""
    line = str(exc).strip().split("\n", 1)[0]
    line = line.split(": <?xml", 1)[0]
    return line[:300] or type(exc).__name__


def fsync_path(path: Path, directory: bool = False) -> None:
    """fsync a file or directory by path."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes | memoryview) -> None:
    """Create ``path`` (it must not exist) with ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data).cast("B")  # slices count bytes, whatever the buffer's item type
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
