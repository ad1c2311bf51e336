"""Durable writes of snapshot images, and the background thread that persists one save at a time.

:func:`write_image` writes a page-aligned buffer into a new file with large sequential writes
(64 MiB), ``O_DIRECT`` where the filesystem supports it (no copy into the page cache, no
dirty pages competing with training for memory), one ``ftruncate`` to the exact size and one
``fsync``. The CRC32C of the image is computed by a second thread while the writes run.
Every call here spends its time in C with the GIL released (``os.pwrite``, ``os.fsync``,
``crc32c``), so a writer thread does not slow a Python training loop down.

Set ``UNBROKEN_DIRECT_IO=0`` to use buffered writes (the fsync then does the work).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ...errors import BackgroundSaveError
from ..format import checksum
from .hostmem import ALIGN, HostBuffer, round_up

log = logging.getLogger("unbroken")

CHUNK = 64 << 20
ENV_DIRECT_IO = "UNBROKEN_DIRECT_IO"


def direct_io_enabled() -> bool:
    return hasattr(os, "O_DIRECT") and os.environ.get(ENV_DIRECT_IO, "1").lower() not in ("0", "false", "no", "off")


def write_image(path: str | os.PathLike[str], image: np.ndarray, size: int) -> int:
    """Write ``image[:size]`` into the new file ``path``, fsync it, and return its CRC32C.

    ``image`` must be a page-aligned uint8 array of at least ``round_up(size)`` bytes (a
    :class:`~.hostmem.HostBuffer`): the last direct write is padded to the alignment and the
    file is truncated back to ``size``.
    """
    aligned = image.__array_interface__["data"][0] % ALIGN == 0 and image.nbytes >= round_up(size)
    fd, direct = _create(path, direct_io_enabled() and aligned)
    # The checksum (about 14 GB/s) runs beside the writes on a second thread: both only read
    # the image, and both release the GIL.
    crc = checksum_beside(image[:size]) if size > CHUNK else None
    try:
        position = 0
        while position < size:
            end = min(position + CHUNK, size)
            direct = _pwrite_all(fd, image[position:round_up(end) if direct else end], position, direct)
            position = end
        os.ftruncate(fd, size)  # drop the padding of the last direct write
        os.fsync(fd)
    finally:
        os.close(fd)
        value = crc.result() if crc is not None else checksum.update(0, image[:size])
    return value


def write_streamed(path: str | os.PathLike[str], header_bytes: bytes, segments: Iterable[Any], size: int) -> int:
    """Write ``header_bytes`` then the byte ``segments`` into the new file ``path``; fsync; return the CRC32C.

    For writing from live tensors (the caller is blocked anyway, so no snapshot is needed):
    the bytes are copied into two page-aligned 64 MiB bounce buffers in turn, and while one
    is being written (direct I/O where possible, on a helper thread) the caller fills and
    checksums the other. ``segments`` yields C-contiguous byte views (memoryview or uint8
    arrays) totalling ``size - len(header_bytes)`` bytes; it is consumed lazily, so a tensor
    that must be copied to the host first (a GPU tensor) is copied only when its turn comes.
    """
    chunk = min(CHUNK, round_up(max(size, 1)))
    buffers = _take_bounce(chunk, 2 if size > chunk else 1)
    try:
        return _write_streamed(path, header_bytes, segments, size, chunk, buffers)
    finally:
        _give_bounce(buffers)


#: Bounce buffers kept for the next synchronous save (faulting 128 MiB in anew each time costs
#: more than the copy through them).
_bounce_pool: list[HostBuffer] = []
_bounce_lock = threading.Lock()


def _take_bounce(chunk: int, n: int) -> list[HostBuffer | None]:
    with _bounce_lock:
        kept = [b for b in _bounce_pool if b.capacity >= chunk][:n]
        for b in kept:
            _bounce_pool.remove(b)
    while len(kept) < n:
        kept.append(HostBuffer(chunk))
    return [*kept, None] if n == 1 else kept


def _give_bounce(buffers: list[HostBuffer | None]) -> None:
    with _bounce_lock:
        for b in buffers:
            if b is not None and b.capacity == CHUNK and len(_bounce_pool) < 2:
                _bounce_pool.append(b)


def _write_streamed(path: str | os.PathLike[str], header_bytes: bytes, segments: Iterable[Any], size: int,
                    chunk: int, buffers: list[HostBuffer | None]) -> int:
    fd, direct = _create(path, direct_io_enabled())
    source = _ByteStream(_chain(header_bytes, segments))
    pending: _InThread | None = None
    try:
        crc = 0
        position = 0
        which = 0
        while position < size:
            buffer = buffers[which].array
            n = source.read_into(buffer[:min(chunk, size - position)])
            if n == 0:
                raise ValueError(f"the tensors hold fewer bytes than the header says ({position} of {size})")
            crc = checksum.update(crc, buffer[:n])
            if pending is not None:
                direct = pending.result()
            pending = _InThread("unbroken-write", _pwrite_all, fd, buffer[:round_up(n) if direct else n],
                                position, direct)
            position += n
            which = 1 - which if buffers[1] is not None else 0
            if buffers[1] is None and position < size:
                direct = pending.result()
                pending = None
        if pending is not None:
            pending.result()
            pending = None
        if source.read_into(buffers[0].array[:1]):
            raise ValueError(f"the tensors hold more bytes than the header says ({size})")
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        if pending is not None:
            try:
                pending.result()
            except BaseException:  # noqa: BLE001 - the first error is the one being raised
                pass
        os.close(fd)
    return crc


def _chain(header_bytes: bytes, segments: Iterable[Any]) -> Iterator[memoryview]:
    yield memoryview(header_bytes)
    for segment in segments:
        yield memoryview(segment).cast("B") if not isinstance(segment, np.ndarray) else memoryview(segment)


class _ByteStream:
    """Copies bytes from a sequence of segments into buffers."""

    def __init__(self, segments: Iterator[memoryview]):
        self._segments = segments
        self._current: memoryview | None = None

    def read_into(self, out: np.ndarray) -> int:
        filled = 0
        while filled < len(out):
            if self._current is None or not len(self._current):
                self._current = next(self._segments, None)
                if self._current is None:
                    break
                continue
            n = min(len(out) - filled, len(self._current))
            np.copyto(out[filled:filled + n], np.frombuffer(self._current[:n], dtype=np.uint8))
            self._current = self._current[n:]
            filled += n
        return filled


def _create(path: str | os.PathLike[str], direct: bool) -> tuple[int, bool]:
    """Create the new file ``path`` for writing: ``(fd, direct)``, with O_DIRECT when asked for and
    the filesystem accepts it at open."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags | (os.O_DIRECT if direct else 0), 0o644), direct
    except OSError as exc:
        if not direct or exc.errno != errno.EINVAL:
            raise
        return os.open(path, flags, 0o644), False  # the filesystem refuses O_DIRECT at open


def checksum_beside(data: np.ndarray) -> "_InThread":
    """Start the CRC32C of ``data`` on a helper thread (GIL released); ``.result()`` gives it."""
    return _InThread("unbroken-crc", checksum.update, 0, data)


class _InThread(threading.Thread):
    """``fn(*args)`` on a helper thread (the GIL is released in the I/O and CRC calls);
    ``result()`` joins and returns its value or re-raises its error."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any):
        super().__init__(name=name, daemon=True)
        self._call, self._value, self._error = (fn, args), None, None
        self.start()

    def run(self) -> None:
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _pwrite_all(fd: int, data: np.ndarray, offset: int, direct: bool) -> bool:
    """Write all of ``data`` at ``offset``; fall back to buffered I/O if O_DIRECT is refused."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            n = os.pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            if direct and exc.errno == errno.EINVAL:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                direct = False
                continue
            raise
        if n <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        done += n
    return direct


class SaveHandle:
    """One save: ``uuid`` and ``steps_completed`` at once; the manifest once committed.

    ``wait()`` blocks until the checkpoint is committed and returns its manifest, or raises
    :class:`~unbroken.errors.BackgroundSaveError` (the cause chained) if writing or committing
    failed. Timings in seconds: ``wait_s`` (waiting for the previous save), ``stall_s`` (how
    long the caller was blocked, ``wait_s`` included) and, once done, ``save_s`` (from the
    call until committed). ``nbytes``: bytes of the checkpoint's state (its tensor file and
    JSON as a complete save would write them); ``bytes_written``: bytes this save wrote (less
    than ``nbytes`` when an incremental save referred to unchanged tensors).
    """

    def __init__(self, uuid: str, steps_completed: int):
        self.uuid = uuid
        self.steps_completed = steps_completed
        self.started = time.monotonic()
        self.wait_s = 0.0
        self.stall_s = 0.0
        self.save_s: float | None = None
        self.nbytes = 0
        self.bytes_written = 0
        self.manifest: Any = None
        self.error: BaseException | None = None
        self.reported = False
        self._done = threading.Event()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until committed; return the manifest. Raises BackgroundSaveError on failure."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"checkpoint {self.uuid} (step {self.steps_completed}) is still being written")
        if self.error is not None:
            self.reported = True
            raise self.failure() from self.error
        return self.manifest

    def failure(self) -> BackgroundSaveError:
        return BackgroundSaveError(
            f"the background save of checkpoint {self.uuid} (steps_completed={self.steps_completed}) failed: "
            f"{type(self.error).__name__}: {self.error}. Nothing of it was committed; earlier checkpoints are intact"
        )

    def _finish(self, manifest: Any = None, error: BaseException | None = None) -> None:
        self.manifest, self.error = manifest, error
        if self.save_s is None:
            self.save_s = time.monotonic() - self.started
        self._done.set()

    def __repr__(self) -> str:
        state = "running" if not self.done() else ("failed" if self.error else "committed")
        return f"SaveHandle({self.uuid!r}, steps_completed={self.steps_completed}, {state})"


class BackgroundWriter:
    """Runs one save job at a time on its own (non-daemon) thread.

    Non-daemon: if the program ends without waiting, the interpreter still lets the commit
    finish before it exits. The caller keeps the "one at a time" rule by calling
    :meth:`wait` before :meth:`start`.
    """

    def __init__(self, name: str = "unbroken-writer"):
        self.name = name
        self._handle: SaveHandle | None = None
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> SaveHandle | None:
        """The last save started (running or finished)."""
        return self._handle

    def busy(self) -> bool:
        return self._handle is not None and not self._handle.done()

    def start(self, handle: SaveHandle, job: Callable[[], Any]) -> None:
        if self.busy():
            raise RuntimeError("a background save is still running; wait() first")
        self._handle = handle
        self._thread = threading.Thread(target=self._main, args=(handle, job), name=self.name, daemon=False)
        self._thread.start()

    def wait(self) -> float:
        """Wait for the running save (if any) to finish; return the seconds waited. Never raises."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return 0.0
        t0 = time.monotonic()
        thread.join()
        return time.monotonic() - t0

    def unreported_failure(self) -> SaveHandle | None:
        """The last save if it finished with an error nobody was told about yet (marks it told)."""
        handle = self._handle
        if handle is not None and handle.done() and handle.error is not None and not handle.reported:
            handle.reported = True
            return handle
        return None

    @staticmethod
    def _main(handle: SaveHandle, job: Callable[[], Any]) -> None:
        try:
            manifest = job()
        except BaseException as exc:  # noqa: BLE001 - every failure is handed to the training thread
            log.error("unbroken: background save of checkpoint %s (step %d) failed: %s: %s", handle.uuid,
                      handle.steps_completed, type(exc).__name__, exc)
            handle._finish(error=exc)
        else:
            handle._finish(manifest=manifest)
