"""Operating-system helpers for the storage, checkpoint and tracking tests.

Imported by the conftest files of tests/storage, tests/checkpoint and tests/tracking (``tests/`` is on
``sys.path`` because of the rootdir conftest): dead and live process ids, and a small tmpfs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from unbroken._proc import pid_alive


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (so no process has it now)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid), "the pid of a reaped child is still in use"
    return proc.pid


@contextlib.contextmanager
def live_process() -> Iterator[int]:
    """A sleeping child process; yields its pid and kills it (by its pid) on exit."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def mount_small_tmpfs(mountpoint: Path, size: str = "2m") -> Iterator[Path]:
    """Generator for a fixture: mount a tmpfs of ``size`` on ``mountpoint``, unmount afterwards.

    Skips (loudly) where mounting is impossible, unless ``$CI`` is set: then it fails, because
    the disk-full tests are acceptance tests that must run in CI.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    reason = None
    if os.geteuid() != 0:
        reason = "the tests do not run as root"
    else:
        try:
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                                    capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"cannot run mount: {exc}"
        else:
            if result.returncode != 0:
                reason = f"mount failed: {result.stderr.strip() or result.returncode}"
    if reason is not None:
        message = (f"!!! DISK-FULL (ENOSPC) TEST NOT RUN: cannot mount a {size} tmpfs ({reason}). "
                   "Run the tests as root (or in a container with CAP_SYS_ADMIN) to cover it.")
        if os.environ.get("CI"):
            pytest.fail(message + " CI is set, so this is a failure, not a skip.")
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        result = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True)
        if result.returncode != 0:  # something still holds it open: detach it lazily
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, text=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
