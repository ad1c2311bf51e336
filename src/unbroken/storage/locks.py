"""File locks that a dead holder cannot keep: the trial's one-writer lease and checkpoint read leases.

Both use ``flock(2)``: the kernel drops a lock when its holder's file is closed, which happens
when the process dies however it dies (SIGKILL included), so no lease outlives its holder
and none needs a timeout. Locks belong to an open file, not to a process: two opens in one
process exclude each other like two processes do, which is what the callers want (a reader in
the training thread is protected from retention in the writer thread).

Lock files are never removed while they may be in use; a checkpoint's read-lease file is
removed by the deleter while it holds the exclusive lock, and a reader that took the shared
lock checks afterwards that the checkpoint still exists.

On object stores (no flock) these leases are local to one machine; see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from .._proc import ProcessIdentity
from ..errors import StorageError, TrialBusy
from .fsio import storage_error

log = logging.getLogger("unbroken")

#: Errors on which a reader goes on without a read lease (see ReadLeases.hold).
_CANNOT_LEASE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EMFILE,
                           errno.ENFILE})

#: How often a waiting acquirer retries.
_POLL_SECONDS = 0.05


class WriterLease:
    """An exclusive lease on one lock file, with the holder's identity written into it.

    ``acquire(wait=0)`` raises :class:`~unbroken.errors.TrialBusy` at once when another open
    file holds it; ``wait=None`` waits without limit, ``wait=s`` up to ``s`` seconds. Release
    with :meth:`release` (or by exiting, however abruptly). Children made by ``fork()`` do not
    keep it (their copy of the descriptor is closed at fork), so a SIGKILLed holder releases
    the trial even while its DataLoader workers live on. Not thread-safe; one per holder.
    """

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float | None = 0, *, sleep=time.sleep, clock=time.monotonic) -> "WriterLease":
        """Take the lease; see the class docstring. Returns self."""
        fd = _open_lock_file(self.path)
        deadline = None if wait is None else clock() + max(0.0, wait)
        try:
            while not _try_flock(fd, fcntl.LOCK_EX):
                if deadline is not None and clock() >= deadline:
                    raise TrialBusy(self._busy_message(wait))
                sleep(_POLL_SECONDS)
            _write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(self)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def _forget_in_forked_child(self) -> None:
        """In a child made by fork() (DataLoader workers, multiprocessing): drop our copy of the fd, so
        that the lease dies with its holder and not with the last of its forked children."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def holder(self) -> dict | None:
        """What the current holder wrote about itself (host, pid, start_time, since), or None."""
        return read_holder(self.path)

    def _busy_message(self, wait: float | None) -> str:
        info = self.holder() or {}
        who = (f"pid {info.get('pid')} on host {info.get('host')} since {_when(info.get('since'))}"
               if info else "another process")
        waited = f" (waited {wait:g} s)" if wait else ""
        return (f"{self.what} is being written by {who}{waited}: a trial has one writer at a time. "
                "Wait for it to end or stop it; or start a new trial (fresh=True, `unbroken run --fresh`); "
                "or wait for it (init(wait_for_trial=SECONDS), `unbroken run --wait SECONDS`)")

    def __enter__(self) -> "WriterLease":
        return self.acquire() if not self.held else self

    def __exit__(self, *exc) -> None:
        self.release()


_HELD: set[WriterLease] = set()  # held leases (a held lease is never garbage: its fd is open)


def _after_fork_in_child() -> None:
    for lease in list(_HELD):
        lease._forget_in_forked_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def read_holder(path: Path) -> dict | None:
    """The holder record of a writer lease file, or None when it is free or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if _try_flock(fd, fcntl.LOCK_SH):
            return None  # nobody holds it exclusively
        data = os.read(fd, 4096)
        return json.loads(data) if data else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


class ReadLeases:
    """Read leases on the entries of one folder: ``hold(name)`` for readers, ``try_exclusive`` for deleters.

    Lease files live in ``<root>/.leases/``. A reader holds a shared lock while it reads; a
    deleter deletes only what it can lock exclusively without waiting.
    """

    def __init__(self, root: Path):
        self.dir = Path(root) / ".leases"

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold a shared lease on ``name`` for the block. Waits while a deleter holds it.

        Where no lease file can be made the block runs without one, with a warning: on
        read-only storage or a folder of another user (whoever cannot write there cannot delete
        there either), and on a full disk or file table (reading a good checkpoint must not fail
        because of a lock file; a deleter elsewhere could then delete it meanwhile).
        """
        try:
            fd = _open_lock_file(self.dir / name)
        except StorageError as exc:
            if exc.errno not in _CANNOT_LEASE:
                raise
            log.warning("unbroken: reading %s without a read lease (%s): retention elsewhere could delete it "
                        "meanwhile", name, exc)
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def try_exclusive(self, name: str) -> Iterator[bool]:
        """Yield True with an exclusive lock on ``name`` when no reader holds it, else False.

        The lease file is removed before the lock is dropped when the block succeeded.
        """
        path = self.dir / name
        try:
            fd = _open_lock_file(path)
        except StorageError as exc:
            # Read-only storage: nobody can hold a lease, and the delete itself will fail. Any other
            # failure (a full disk, a lease file of another user) may hide a reader: do not delete.
            yield exc.errno == errno.EROFS
            return
        try:
            got = _try_flock(fd, fcntl.LOCK_EX)
            yield got
            if got:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        finally:
            os.close(fd)


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                       0o644)
    except OSError as exc:
        raise storage_error("open lock file", path, exc) from exc


def _try_flock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _write_holder(fd: int) -> None:
    me = ProcessIdentity.current()
    record = {"host": me.host, "pid": me.pid, "start_time": me.start_time, "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def _when(since: float | None) -> str:
    if not isinstance(since, (int, float)):
        return "an unknown time"
    return datetime.datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M:%S")
