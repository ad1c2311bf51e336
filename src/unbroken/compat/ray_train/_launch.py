"""The driver's side of a run: start ``unbroken run`` for the workers, pass stops on, wait for its end.

The supervisor (``python -m unbroken run``) is started through the parent-death wrapper of
:mod:`unbroken.launch.child` with the driver as the parent to watch: if the driver dies, however
hard (SIGKILL), the kernel kills the supervisor; the supervisor's own wrapper kills the group
launcher, and each worker kills itself with its parent (see :mod:`._worker`). So no worker
outlives the driver. The supervisor runs in its own session; SIGINT, SIGTERM and SIGHUP received
by the driver while it waits are passed on (the workers stop at their next report and exit 75; a
second SIGINT cancels: the supervisor kills them and exits 130).

Call from the main thread (signal handlers; the parent-death signal follows the thread that
started the child). Blocks until the supervisor ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

from ...envvars import PROTOCOL_VARIABLES
from ...errors import LaunchError
from ...launch.child import wrapped

#: What max_failures=-1 (no limit) becomes: a restart budget no run reaches.
UNLIMITED = 1_000_000


def supervisor_argv(folder: Path, name: str, num_workers: int, max_failures: int, fresh: bool) -> list[str]:
    """The ``unbroken run`` command line that runs the workers of experiment ``name`` in ``folder``."""
    budget = UNLIMITED if max_failures < 0 else max_failures
    argv = [sys.executable, "-m", "unbroken", "run", "--name", name, "--backoff", "0", "--max-restarts", str(budget),
            "--wait", "30s"]
    if max_failures >= 0:
        argv += ["--max-total-failures", str(max_failures)]
    if fresh:
        argv.append("--fresh")
    if num_workers > 1:
        argv += ["--nproc-per-node", str(num_workers)]
    return [*argv, "--", sys.executable, "-m", "unbroken.compat.ray_train._worker", str(folder)]


def supervisor_env(folder: Path) -> dict[str, str]:
    """The driver's environment with the experiment folder as the home and no other unbroken run's settings."""
    env = {k: v for k, v in os.environ.items() if k not in PROTOCOL_VARIABLES}
    env["UNBROKEN_HOME"] = str(folder)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_supervisor(argv: Sequence[str], env: dict[str, str]) -> int:
    """Start the supervisor (see the module docstring), wait for it, return its exit status."""
    report_r, report_w = os.pipe()
    try:
        proc = subprocess.Popen(wrapped(argv, report_w), env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                close_fds=True, pass_fds=(report_w,))
    except OSError as exc:
        os.close(report_r)
        raise LaunchError(f"cannot start the supervisor {argv[0]!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        failure = report.read()
    if failure:
        proc.wait()
        raise LaunchError(f"cannot start the supervisor: {failure.decode(errors='replace')}")
    with _PassingStops(proc):
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # a handler that raised: keep waiting for the workers' clean stop
                continue


class _PassingStops:
    """While the block runs (main thread only), SIGINT, SIGTERM and SIGHUP go to ``proc`` instead of ending the driver."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.previous: dict[int, object] = {}

    def _forward(self, signum: int, _frame: object) -> None:
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "_PassingStops":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
