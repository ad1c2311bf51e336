"""The supervisor's view of time, injectable so its policies are tested with a fake clock."""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    """Wall time (deadlines), monotonic time (intervals) and sleeping, in seconds."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: :func:`time.time`, :func:`time.monotonic`, :func:`time.sleep`."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)
    sleep = staticmethod(_time.sleep)


SYSTEM_CLOCK = SystemClock()
