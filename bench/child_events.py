"""Reading the ``BENCH {json}`` lines of ``train_child.py`` from a running command, and killing it.

Used by ``recovery_bench.py`` and ``ettr_bench.py``. ``Events`` runs the command (``unbroken run``
or a shell restart loop) in its own session, collects its events in a reader thread, and lets
the harness wait for one (``next``), kill the current training process (``kill_child``: SIGKILL,
by the pid the child printed) and stop everything (``stop``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
CHILD = BENCH_DIR / "train_child.py"


def child_command(*args: str) -> list[str]:
    """``python train_child.py args...`` with this interpreter."""
    return [sys.executable, str(CHILD), *args]


def unbroken_command(home: Path, name: str, child_args: Sequence[str], *extra: str) -> list[str]:
    """``unbroken run`` of the training child in ``home``, restarting at once after any crash."""
    return [sys.executable, "-m", "unbroken", "run", "--home", str(home), "--name", name, "--backoff", "0",
            "--max-restarts", "100000", *extra, "--", *child_command(*child_args)]


class Events:
    """A command whose ``BENCH`` lines become events (dicts with ``t_seen``, the harness's clock)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None):
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._log = open(log, "w") if log is not None else None
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, **(env or {})})
        self.child_pid: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if self._log is not None:
                self._log.write(line)
            event = _parse(line)
            if event is not None:
                event["t_seen"] = time.time()
                self._queue.put(event)
        self._queue.put(None)

    def next(self, want: Callable[[dict], bool], timeout: float = 120.0) -> dict:
        """The next event for which ``want(event)``; events before it are dropped (``start`` ones
        still update ``child_pid``). Raises TimeoutError, or RuntimeError if the command ended."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("no expected event from the training process in time") from None
            if event is None:
                raise RuntimeError(f"the command ended (status {self.proc.wait()})")
            if event["event"] == "start":
                self.child_pid = event["pid"]
            if want(event):
                return event

    def drain(self) -> list[dict]:
        """Every event received so far and not yet taken."""
        out = []
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return out
            if event is None:
                return out
            if event["event"] == "start":
                self.child_pid = event["pid"]
            out.append(event)

    def kill_child(self) -> float:
        """SIGKILL the current training process; return the Unix time just after the kill."""
        os.kill(self.child_pid, signal.SIGKILL)
        return time.time()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the whole session (the command saves and exits), SIGKILL after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self._reader.join(5)
        if self._log is not None:
            self._log.close()


def interpreter_start(runs: int = 5) -> float:
    """Median seconds from starting ``python -c`` (this interpreter) to its first line."""
    times = []
    for _ in range(runs):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], capture_output=True,
                             text=True, check=True).stdout
        times.append(float(out) - t0)
    return sorted(times)[len(times) // 2]


def _parse(line: str) -> dict | None:
    """The event of a ``BENCH`` line, or None. A process SIGKILLed in the middle of a line leaves it
    unterminated, and the next process's first line continues it: the last ``BENCH `` on a line counts."""
    start = line.rfind("BENCH ")
    if start < 0:
        return None
    try:
        return json.loads(line[start + 6:])
    except ValueError:
        return None  # a line cut by the kill itself
