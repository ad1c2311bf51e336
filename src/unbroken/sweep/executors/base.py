"""Where trial segments run: the interface of an executor, and what a segment job is.

The driver hands an executor a :class:`SegmentJob` (run this trial's command under
``unbroken run`` with these extra environment variables) and gets back a JSON-able handle,
stored in the index so that a restarted driver can ask about it again. ``poll(handle)`` says
whether the job still runs (None), how its supervisor exited (0 completed the segment, 75
stopped by a signal, 1 out of restarts), or :data:`LOST` (the job is gone without a status,
e.g. it belonged to a driver that died: the driver starts the segment again, and the trial
resumes from its checkpoint). Calls come from the driver's main thread.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

#: ``poll`` result: the job vanished without an exit status.
LOST = "lost"


@dataclasses.dataclass(frozen=True)
class SegmentJob:
    """One segment of one trial, as an executor runs it."""

    sweep: str
    trial: int
    segment: int
    command: tuple[str, ...]  # the trial's command (run by the supervisor)
    env: dict[str, str]  # extra environment: the directive, home, storage, database
    home: Path
    logs: Path  # folder for the supervisor's own output
    max_failures: int = 3
    backoff: float = 1.0
    cwd: str | None = None

    def supervisor_argv(self, python: str = sys.executable) -> list[str]:
        """``python -m unbroken run ...`` for this segment (the local and Ray executors use it)."""
        return [python, "-m", "unbroken", "run", "--name", self.sweep, "--trial", str(self.trial),
                "--max-restarts", str(self.max_failures), "--backoff", f"{self.backoff:g}",
                "--backoff-max", f"{max(self.backoff, 30):g}", "--wait", "60", "--", *self.command]

    def describe(self) -> str:
        return f"{self.sweep}/{self.trial} segment {self.segment}: {shlex.join(self.command)}"


class Executor:
    """Base class (see the module docstring)."""

    name = "executor"
    #: How many segments may run at once on this executor (None: as the sweep says).
    slots: int | None = None

    def start(self) -> None:
        """Connect (to a cluster); called once before the first launch. Errors are ConfigError/LaunchError."""

    def launch(self, job: SegmentJob) -> dict[str, Any]:
        raise NotImplementedError

    def poll(self, handle: dict[str, Any]) -> int | str | None:
        raise NotImplementedError

    def stop(self, handle: dict[str, Any]) -> None:
        """Ask the segment to save and stop (it exits 75 later)."""

    def wait(self, seconds: float) -> None:
        """Block up to ``seconds`` (less when a segment may have ended)."""
        import time

        time.sleep(seconds)

    def close(self) -> None:
        """Release the executor (disconnect); running segments of other executors are not touched."""
