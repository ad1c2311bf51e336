"""Helpers for the compat tests (imported as compat.compathelp): supervise a program, watch its index, kill its child."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from unbroken.errors import TrackingError
from unbroken.tracking import Tracker

from procs import child_env
from waiting import wait_until

PROGRAMS = Path(__file__).resolve().parent / "programs"


def program(name: str, *args: str) -> list[str]:
    return [sys.executable, "-u", str(PROGRAMS / name), *args]


def supervise(home: Path, run_args: list[str], command: list[str], out: Path, **env: str) -> subprocess.Popen:
    """`unbroken run RUN_ARGS -- COMMAND` with its output in ``out``."""
    cmd = [sys.executable, "-m", "unbroken", "run", "--backoff", "0", *run_args, "--", *command]
    return subprocess.Popen(cmd, env=child_env(home, **env), stdout=out.open("w"), stderr=subprocess.STDOUT)


def committed(home: Path, name: str) -> int:
    """How many committed checkpoints trial ``name`` has in the index (0 before it exists)."""
    try:
        with contextlib.closing(Tracker.open_readonly(home / "unbroken.db")) as tracker:
            return sum(c.state == "committed" for c in tracker.checkpoints(tracker.trial(name).id))
    except TrackingError:
        return 0


def kill_child_after(sup: subprocess.Popen, home: Path, name: str, checkpoints: int, out: Path) -> None:
    """Wait for ``checkpoints`` committed checkpoints of ``name``, then SIGKILL the supervised child."""
    wait_until(lambda: committed(home, name) >= checkpoints or sup.poll() is not None, timeout=60,
               what=f"{checkpoints} checkpoints of {name}")
    assert sup.poll() is None, out.read_text()
    (child,) = psutil.Process(sup.pid).children()
    child.send_signal(signal.SIGKILL)
    child.wait(30)


def show(home: Path, name: str) -> dict:
    cmd = [sys.executable, "-m", "unbroken", "show", name, "--json"]
    done = subprocess.run(cmd, env=child_env(home), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
