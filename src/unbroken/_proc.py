"""Process identity and liveness, shared by storage, tracking and launch.

A pid alone does not name a process: pids are reused, and a killed child stays a zombie (its
pid "exists") until its parent reaps it. A process is named by ``(host, pid, start time)``
and is alive only if a non-zombie process with that pid and that start time runs on this host.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import psutil

#: Start times are compared with this tolerance (seconds): they derive from the boot time in whole
#: seconds, which moves when the wall clock is stepped; a pid is reused only after the pid space wraps.
_START_TOLERANCE = 1.0


@dataclasses.dataclass(frozen=True)
class ProcessIdentity:
    """Who a process is: its host, pid and start time (Unix seconds, None when unknown)."""

    host: str
    pid: int
    start_time: float | None

    @classmethod
    def current(cls) -> "ProcessIdentity":
        return cls(socket.gethostname(), os.getpid(), process_start_time(os.getpid()))

    @classmethod
    def of(cls, pid: int) -> "ProcessIdentity":
        """The identity of a process of this host (start time None if it is gone)."""
        return cls(socket.gethostname(), int(pid), process_start_time(pid))

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool | None:
        """True/False on this host; None (unknown) for a process of another host."""
        if not self.on_this_host():
            return None
        return identity_alive(self.pid, self.start_time)


def process_start_time(pid: int) -> float | None:
    """The start time of a live process of this host (Unix seconds), or None if there is none."""
    try:
        return psutil.Process(int(pid)).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OverflowError):
        return None


def identity_alive(pid: int, start_time: float | None) -> bool:
    """True if the process ``pid`` of this host runs, is no zombie, and started at ``start_time``.

    With ``start_time`` None (rows written before start times were recorded) only the pid and
    the zombie state are checked.
    """
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return start_time is None or abs(proc.create_time() - start_time) <= _START_TOLERANCE
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError, OverflowError):
        return False


def pid_alive(pid: int) -> bool:
    """True if a non-zombie process with this pid exists on this host."""
    return identity_alive(pid, None)
