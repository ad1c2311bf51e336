"""flock leases: the trial's one writer and checkpoint read leases; no dead holder keeps one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from unbroken.errors import TrialBusy
from unbroken.storage.locks import ReadLeases, WriterLease, read_holder


def test_writer_lease_excludes_a_second_open_even_in_the_same_process(tmp_path):
    first = WriterLease(tmp_path / "t" / ".writer.lock", "trial x/1").acquire()
    try:
        with pytest.raises(TrialBusy) as info:
            WriterLease(tmp_path / "t" / ".writer.lock", "trial x/1").acquire()
        assert f"pid {os.getpid()}" in str(info.value) and "trial x/1" in str(info.value)
        holder = read_holder(tmp_path / "t" / ".writer.lock")
        assert holder["pid"] == os.getpid() and holder["start_time"] is not None
    finally:
        first.release()
    assert read_holder(tmp_path / "t" / ".writer.lock") is None
    WriterLease(tmp_path / "t" / ".writer.lock", "trial x/1").acquire().release()


def test_waiting_uses_the_injected_clock_and_sleep(tmp_path):
    held = WriterLease(tmp_path / "l", "trial").acquire()
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    try:
        with pytest.raises(TrialBusy, match="waited 1 s"):
            WriterLease(tmp_path / "l", "trial").acquire(wait=1.0, sleep=sleep, clock=lambda: now[0])
        assert 1.0 <= sum(sleeps) < 1.2
    finally:
        held.release()


def test_a_sigkilled_holder_releases_the_lease(tmp_path):
    path = tmp_path / ".writer.lock"
    code = ("import sys; from unbroken.storage.locks import WriterLease\n"
            f"WriterLease({str(path)!r}, 'trial').acquire(); print('held', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(TrialBusy, match=f"pid {proc.pid}"):
            WriterLease(path, "trial").acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        WriterLease(path, "trial").acquire().release()
    finally:
        proc.kill()
        proc.wait()


def test_read_leases_block_exclusive_deleters_and_lease_files_go_with_the_delete(tmp_path):
    leases = ReadLeases(tmp_path)
    with leases.hold("ck"):
        with leases.try_exclusive("ck") as free:
            assert not free
    with leases.try_exclusive("ck") as free:
        assert free
    assert not (tmp_path / ".leases" / "ck").exists()


def test_a_read_lease_on_read_only_storage_is_a_no_op(tmp_path, monkeypatch):
    import errno

    import unbroken.storage.locks as locks
    from unbroken.errors import StorageError

    def refuse(path):
        raise StorageError(errno.EROFS, "read-only")

    monkeypatch.setattr(locks, "_open_lock_file", refuse)
    ran = []
    with ReadLeases(tmp_path).hold("ck"):
        ran.append(True)
    assert ran == [True]


def test_a_forked_child_does_not_keep_the_writer_lease_of_its_killed_parent(tmp_path):
    """DataLoader workers are forked: the lease must die with the holder, not with its last worker."""
    path = tmp_path / ".writer.lock"
    code = ("import os, sys, time; from unbroken.storage.locks import WriterLease\n"
            f"WriterLease({str(path)!r}, 'trial').acquire()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    time.sleep(120); os._exit(0)\n"
            "print(pid, flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        os.kill(worker, 0)  # the worker lives on
        # Free as soon as the worker has run its at-fork hook (at once, unless the machine is loaded).
        WriterLease(path, "trial").acquire(wait=30).release()
        os.kill(worker, 0)  # and it still lives: the lease did not wait for it to end
    finally:
        proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
