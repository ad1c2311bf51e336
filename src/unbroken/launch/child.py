"""Starting the training command as a child that cannot outlive its supervisor.

:func:`spawn` is the supervisor's default spawner: ``spawn(argv, env, tee) -> Child``. The child
runs in its own session (so a terminal's Ctrl-C reaches only the supervisor, which forwards it),
with no file descriptors of ours but its pipes (``close_fds``: the trial's writer lease stays
with the supervisor), and its output is pumped into ``tee``.

Parent death: on Linux the command is started through a tiny wrapper (``python -I -c``) that
sets ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` and then checks that its parent is still the
supervisor (closing the race with a supervisor that died during the fork) before it ``exec``\\ s
the command; the setting survives ``exec``. If the supervisor is killed, however hard, the
kernel kills the command. Known gaps: the signal reaches the command only, not processes the
command started itself (torchrun's workers are killed by torchrun's own death handling, other
grandchildren may survive); it fires when the supervisor's *thread* that spawned the child
ends, which is the main thread here; and on other systems (macOS) there is no such setting,
so an orphaned command lives on until it ends by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Protocol, Sequence

from ..errors import LaunchError
from .streams import LogTee

#: Runs as ``python -I -c WRAPPER <supervisor pid> <program> <args...>`` between fork and the command.
_WRAPPER = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
    sys.stderr.write("unbroken: cannot set the parent-death signal; the command may outlive its supervisor\\n")
for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; an exec'd command must not inherit that
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
if os.getppid() != int(sys.argv[1]):
    os._exit(137)  # the supervisor died before the signal was set: do not start an orphan
report = int(sys.argv[2])
os.set_inheritable(report, False)  # closed by a successful exec: the supervisor then reads EOF
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as exc:
    os.write(report, (exc.strerror or str(exc)).encode())
    os._exit(127)
"""

#: Exit status of the wrapper when the command cannot be executed (as a shell's 127).
EXIT_NOT_EXECUTABLE = 127


class Child(Protocol):
    """A started command, as the supervisor sees it. Called from the supervisor's main thread only."""

    pid: int

    def wait(self, timeout: float) -> int | None:
        """Block up to ``timeout`` seconds; the exit status (negative: killed by that signal) or None."""

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the command (not its group); no error if it is gone."""

    def kill_group(self) -> None:
        """SIGKILL the command's whole process group (what it left behind goes too)."""


class PopenChild:
    """A :class:`Child` backed by :class:`subprocess.Popen`."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wrapped(argv: Sequence[str], report_fd: int, supervisor_pid: int | None = None) -> list[str]:
    """The argv that runs ``argv`` under the parent-death wrapper (unchanged where there is none);
    an exec failure is written to ``report_fd``."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-c", _WRAPPER, str(supervisor_pid or os.getpid()), str(report_fd), *argv]


def spawn(argv: Sequence[str], env: dict[str, str], tee: LogTee) -> Child:
    """Start ``argv`` (see the module docstring) and pump its stdout/stderr into ``tee``.

    Raises :class:`~unbroken.errors.LaunchError` when the program cannot be started (not found,
    not executable, a missing interpreter): like ``subprocess``, the exec error comes back
    through a close-on-exec pipe. Blocks only until the command is exec'd.
    """
    _check_startable(argv[0], env)
    report_r, report_w = os.pipe()
    try:
        popen = subprocess.Popen(wrapped(argv, report_w), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                                 pass_fds=(report_w,))
    except OSError as exc:
        os.close(report_r)
        raise LaunchError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(report_w)
    _raise_exec_failure(report_r, popen, argv[0])
    tee.pump(popen.stdout, 1)
    tee.pump(popen.stderr, 2)
    return PopenChild(popen)


def _raise_exec_failure(report_r: int, popen: subprocess.Popen, program: str) -> None:
    """Read the wrapper's report: EOF means the command was exec'd; bytes are the exec error."""
    with os.fdopen(report_r, "rb") as report:
        failure = report.read()
    if failure:
        popen.wait()
        popen.stdout.close()
        popen.stderr.close()
        raise LaunchError(f"cannot start {program!r}: {failure.decode(errors='replace')} "
                          "(is its interpreter installed? check the #! line of a script)")


def _check_startable(program: str, env: dict[str, str]) -> None:
    """Fail as Popen would have, before the wrapper turns the error into the child's exit status."""
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        exists = os.sep in program and os.path.exists(program)
        raise LaunchError(f"cannot start {program!r}: {'not an executable file' if exists else 'No such file or directory'}")
