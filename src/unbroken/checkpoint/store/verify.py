"""Verifying checkpoint files against their manifest: the one place that opens, sizes and checksums them.

Every reader of a checkpoint file (restore, ``unbroken verify``, ``unbroken export``, the
store's own verification) goes through these primitives, so they all refuse the same things:

* a symbolic link anywhere below the checkpoint directory (every component is opened with
  ``O_NOFOLLOW`` relative to its parent): :class:`CorruptCheckpoint`;
* anything that is not a regular file (FIFO, socket, device, folder): opened with
  ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read, so it is
  :class:`CorruptCheckpoint` ("file X is not a regular file"), never a hang;
* a size that differs from the manifest entry, checked with ``fstat`` before reading;
* a checksum that differs from the manifest entry.

A file that is missing while the checkpoint's ``MANIFEST.json`` is gone too was deleted under
the reader (retention, ``gc``): :class:`CheckpointGone`, never "corrupt". A missing file
beside a present manifest is :class:`CorruptCheckpoint`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from ...config import MANIFEST_NAME
from ...errors import CheckpointGone, CheckpointNotFound, CorruptCheckpoint
from ...storage.fsio import storage_error
from ..format import checksum
from ..format.manifest import FileEntry, Manifest

#: Bytes per read while streaming a checksum.
CHUNK = 8 << 20
#: ``progress(n)`` is called after each chunk with the number of bytes just checked.
Progress = Callable[[int], None]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC


def check_entry(uuid: str, entry: FileEntry, size: int, crc: str) -> None:
    """Raise CorruptCheckpoint if a file's size or checksum differs from its manifest entry."""
    if size != entry.size:
        raise CorruptCheckpoint(
            f"checkpoint {uuid}: file {entry.path} has {size} bytes, the manifest says {entry.size} (truncated?)"
        )
    if crc != entry.crc32c:
        raise CorruptCheckpoint(f"checkpoint {uuid}: file {entry.path} fails its checksum ({crc} != {entry.crc32c})")


def open_entry(directory: Path, uuid: str, entry: FileEntry) -> int:
    """Open the file of a manifest entry for reading; return its descriptor (the caller closes it).

    The file is a regular file reached without following any link below ``directory`` (the
    checkpoint directory itself may be reached through links), and its size is the entry's.
    Raises CorruptCheckpoint (link, not a regular file, wrong size, missing beside a present
    manifest, unreadable), or CheckpointGone when the checkpoint was deleted under the reader.
    """
    try:
        fd = _open_below(Path(directory), entry.path)
    except OSError as exc:
        raise _open_error(Path(directory), uuid, entry.path, exc) from None
    try:
        size = _regular_size(fd, f"checkpoint {uuid}: file {entry.path}")
        if size != entry.size:
            check_entry(uuid, entry, size, entry.crc32c)  # raises: the size differs
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened(directory: Path, uuid: str, entry: FileEntry) -> Iterator[int]:
    """:func:`open_entry` as a context manager that closes the descriptor."""
    fd = open_entry(directory, uuid, entry)
    try:
        yield fd
    finally:
        os.close(fd)


def stream_crc(fd: int, size: int, *, start: int = 0, crc: int = 0, progress: Progress | None = None,
               sink: BinaryIO | None = None, label: str = "file") -> int:
    """Extend ``crc`` with bytes ``[start, size)`` of ``fd`` read in chunks; return the CRC (int).

    Each chunk is written to ``sink`` when given, then reported to ``progress``. Memory used:
    one chunk. A file that ends before ``size`` raises CorruptCheckpoint; read errors raise
    StorageError.
    """
    buffer = memoryview(bytearray(min(CHUNK, max(size - start, 1))))
    done = start
    try:
        while done < size:
            n = os.preadv(fd, [buffer[:size - done]], done)
            if n == 0:
                raise CorruptCheckpoint(f"{label} ended early (at byte {done} of {size})")
            crc = checksum.update(crc, buffer[:n])
            if sink is not None:
                sink.write(buffer[:n])
            done += n
            if progress is not None:
                progress(n)
    except OSError as exc:
        raise storage_error("read", label, exc) from exc
    return crc


def verify_file(directory: Path, uuid: str, entry: FileEntry, *, progress: Progress | None = None,
                sink: BinaryIO | None = None) -> None:
    """Check one file's kind, size and checksum against its manifest entry (one streamed read).

    ``sink`` receives every byte read (an export copies and verifies in one pass). Raises
    CorruptCheckpoint, CheckpointGone or StorageError (see :func:`open_entry`).
    """
    with opened(directory, uuid, entry) as fd:
        crc = stream_crc(fd, entry.size, progress=progress, sink=sink, label=f"checkpoint {uuid}: file {entry.path}")
    check_entry(uuid, entry, entry.size, checksum.to_hex(crc))


def verify_checkpoint(directory: Path, manifest: Manifest, *, progress: Progress | None = None) -> None:
    """Verify every file of a checkpoint against ``manifest`` (see :func:`verify_file`)."""
    for entry in manifest.files:
        verify_file(directory, manifest.uuid, entry, progress=progress)


def read_entry(directory: Path, uuid: str, entry: FileEntry) -> bytearray:
    """Read a whole (small) file of a manifest entry into memory, verified; ``entry.size`` bytes."""
    with opened(directory, uuid, entry) as fd:
        data = bytearray(entry.size)
        view = memoryview(data)
        label = f"checkpoint {uuid}: file {entry.path}"
        done = 0
        try:
            while done < entry.size:
                n = os.preadv(fd, [view[done:]], done)
                if n == 0:
                    raise CorruptCheckpoint(f"{label} ended early (at byte {done} of {entry.size})")
                done += n
        except OSError as exc:
            raise storage_error("read", label, exc) from exc
    check_entry(uuid, entry, entry.size, checksum.to_hex(checksum.update(0, data)))
    return data


def read_small_file(path: Path, limit: int) -> bytes:
    """Read a whole file of at most ``limit`` bytes that must be a regular file (MANIFEST.json).

    The last component is not followed if it is a link. Raises CheckpointNotFound when it (or
    its directory) does not exist, CorruptCheckpoint for a link, a FIFO, socket, device or
    folder, or a file over ``limit`` bytes (checked with fstat before reading: never a hang,
    never a huge allocation), StorageError for other I/O errors.
    """
    path = Path(path)
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise CheckpointNotFound(f"{path} does not exist") from None
        raise _kind_error(exc, f"file {path.name}") or storage_error("open", path, exc) from None
    try:
        size = _regular_size(fd, f"file {path.name}")
        if size > limit:
            raise CorruptCheckpoint(f"file {path.name} is {size} bytes, larger than any valid one ({limit})")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise storage_error("read", path, exc) from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise CorruptCheckpoint(f"file {path.name} is larger than any valid one ({limit} bytes)")
    return data


def is_gone(directory: Path) -> bool:
    """True when the checkpoint at ``directory`` no longer has a manifest (deleted or being deleted)."""
    return not os.path.lexists(Path(directory) / MANIFEST_NAME)


# -- helpers --------------------------------------------------------------------------------------
def _open_below(directory: Path, relpath: str) -> int:
    """Open ``directory/relpath`` without following links below ``directory``; non-blocking open."""
    parts = relpath.split("/")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except NotADirectoryError:  # O_DIRECTORY wins over O_NOFOLLOW: tell a link from a file
                if stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), part) from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _regular_size(fd: int, label: str) -> int:
    """fstat ``fd``: its size if it is a regular file (and make it blocking), else CorruptCheckpoint."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise CorruptCheckpoint(f"{label} is not a regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return info.st_size


def _kind_error(exc: OSError, label: str) -> CorruptCheckpoint | None:
    """The CorruptCheckpoint an open error means when the path is a link or not a regular file."""
    if exc.errno == errno.ELOOP:
        return CorruptCheckpoint(f"{label} is a symbolic link; checkpoints never follow links")
    if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENOTDIR, errno.ENODEV, errno.EOPNOTSUPP):
        return CorruptCheckpoint(f"{label} is not a regular file")
    return None


def _open_error(directory: Path, uuid: str, relpath: str, exc: OSError) -> CheckpointNotFound | CorruptCheckpoint:
    label = f"checkpoint {uuid}: file {relpath}"
    if exc.errno == errno.ENOENT:
        if is_gone(directory):
            return CheckpointGone(f"checkpoint {uuid} was deleted while it was being read")
        return CorruptCheckpoint(f"{label} is missing")
    return _kind_error(exc, label) or CorruptCheckpoint(f"{label} cannot be opened: {exc.strerror or exc}")
