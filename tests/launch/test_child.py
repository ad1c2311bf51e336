"""The spawner: the command dies with its supervisor, inherits no lease, and starts like a plain exec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from unbroken.errors import LaunchError
from unbroken.launch.child import spawn
from unbroken.launch.streams import LogTee
from unbroken.storage.locks import WriterLease

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")


def run_child(tmp_path: Path, code: str) -> tuple[int, str]:
    tee = LogTee(tmp_path / "child.log")
    child = spawn([sys.executable, "-c", code], dict(os.environ), tee)
    status = child.wait(30)
    tee.close()
    return status, (tmp_path / "child.log").read_text()


def test_lease_fd_is_not_inherited(tmp_path):
    lease = WriterLease(tmp_path / ".writer.lock", "trial t/1").acquire()
    try:
        status, log = run_child(tmp_path, textwrap.dedent("""
            import os
            for fd in os.listdir("/proc/self/fd"):
                try:
                    print("fd", os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    pass  # the listing's own descriptor, closed by now
        """))
    finally:
        lease.release()
    assert status == 0 and "fd pipe:" in log, log
    assert ".writer.lock" not in log


def test_command_does_not_inherit_ignored_signals(tmp_path):
    tee = LogTee(tmp_path / "status.log")
    assert spawn(["cat", "/proc/self/status"], dict(os.environ), tee).wait(30) == 0
    tee.close()
    ignored = int(next(l for l in (tmp_path / "status.log").read_text().splitlines() if l.startswith("SigIgn:"))
                  .split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), "SIGPIPE is ignored in the command (the wrapper is Python)"


def test_exit_status_and_signals_pass_through(tmp_path):
    assert run_child(tmp_path, "import sys; sys.exit(7)")[0] == 7
    assert run_child(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")[0] == -signal.SIGKILL


def test_unstartable_program_is_a_launch_error(tmp_path):
    with pytest.raises(LaunchError, match="cannot start '/no/such/program'"):
        spawn(["/no/such/program"], dict(os.environ), LogTee(tmp_path / "x.log"))
    with pytest.raises(LaunchError, match="cannot start 'no-such-program-xyz'"):
        spawn(["no-such-program-xyz"], dict(os.environ), LogTee(tmp_path / "y.log"))


def test_a_script_whose_interpreter_is_missing_is_a_launch_error_not_a_crash(tmp_path):
    script = tmp_path / "bad.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    with pytest.raises(LaunchError, match="cannot start .*bad.sh.*interpreter"):
        spawn([str(script)], dict(os.environ), LogTee(tmp_path / "z.log"))
    not_executable = tmp_path / "data.bin"
    not_executable.write_bytes(b"\x00\x01 not a program")
    not_executable.chmod(0o755)
    with pytest.raises(LaunchError, match="cannot start"):
        spawn([str(not_executable)], dict(os.environ), LogTee(tmp_path / "w.log"))


PARENT = textwrap.dedent("""
    import os, sys, time
    from unbroken.launch.child import spawn
    from unbroken.launch.streams import LogTee
    child = spawn([sys.executable, "-c", "import time; time.sleep(300)"], dict(os.environ), LogTee(sys.argv[1]))
    print(child.pid, flush=True)
    time.sleep(300)
""")


def test_child_dies_when_its_supervisor_is_killed(tmp_path, wait_until):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "log")], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        child = psutil.Process(pid)
        # the wrapper exec()s the command in place: same pid, the command's own program
        wait_until(lambda: "time.sleep(300)" in " ".join(child.cmdline()), what="the command to run")
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, what="the child to die")
    finally:
        parent.kill()
