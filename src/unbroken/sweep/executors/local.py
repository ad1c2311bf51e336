"""The local executor: each segment is an ``unbroken run`` process on this machine.

Each supervisor process is started in its own session (a terminal's Ctrl-C reaches the driver
only, which asks every trial to save and stop) with a parent-death signal: if the driver dies,
however hard, its trials die with it (the supervisor's child follows through its own
parent-death wrapper), and the next driver starts those segments again from their checkpoints.
The supervisor's own output goes to ``<logs>/supervisor.log`` (the command's output is in the
trial's attempt logs, as for any trial).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from typing import Any

from .base import LOST, Executor, SegmentJob

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class LocalExecutor(Executor):
    """Runs segments as child processes of the driver (see the module docstring)."""

    name = "local"

    def __init__(self):
        self._children: dict[int, subprocess.Popen] = {}

    def launch(self, job: SegmentJob) -> dict[str, Any]:
        job.logs.mkdir(parents=True, exist_ok=True)
        with open(job.logs / "supervisor.log", "ab") as out:
            child = subprocess.Popen(job.supervisor_argv(), env={**os.environ, **job.env}, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, cwd=job.cwd, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self._children[child.pid] = child
        return {"executor": self.name, "pid": child.pid, "driver_pid": os.getpid()}

    def poll(self, handle: dict[str, Any]) -> int | str | None:
        child = self._children.get(handle.get("pid"))
        if child is None or handle.get("driver_pid") != os.getpid():
            return LOST  # started by an earlier driver, which took it along when it died
        code = child.poll()
        if code is not None:
            del self._children[child.pid]
        return code

    def stop(self, handle: dict[str, Any]) -> None:
        child = self._children.get(handle.get("pid"))
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if any(child.poll() is not None for child in self._children.values()):
                return
            time.sleep(min(0.02, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        for child in list(self._children.values()):
            if child.poll() is None:
                child.kill()
            child.wait()
        self._children.clear()
