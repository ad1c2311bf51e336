"""Stop requests: signals and deadlines set a flag; the training loop acts at a step boundary.

Signal handlers do nothing but record the request (no I/O, no locks, no exit), as DESIGN.md
demands. A second SIGINT while a stop is pending raises KeyboardInterrupt at once, so an
impatient Ctrl-C still works.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Iterable

from ..config import ENV_DEADLINE, ENV_PREEMPT_SIGNAL
from ..errors import ConfigError

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT")
DEFAULT_EXTRA_SIGNAL = "SIGUSR2"  # Slurm's --signal; USR1 is taken by NCCL


def parse_signal(name: str | int | signal.Signals) -> signal.Signals:
    """``"USR2"``, ``"SIGUSR2"``, ``12`` -> ``signal.SIGUSR2`` (ConfigError if unknown)."""
    if isinstance(name, signal.Signals):
        return name
    try:
        if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
            return signal.Signals(int(name))
        upper = name.upper()
        return signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError, AttributeError):
        raise ConfigError(f"unknown signal {name!r}; use a name like USR2 or TERM") from None


class PreemptContext:
    """Knows whether the training should stop now: ``should_preempt()``."""

    def __init__(self, signals: Iterable[str | int] | None = None, deadline: float | None = None):
        extra = os.environ.get(ENV_PREEMPT_SIGNAL) or DEFAULT_EXTRA_SIGNAL
        names = list(signals) if signals is not None else [*DEFAULT_SIGNALS, extra]
        self.signals = tuple(dict.fromkeys(parse_signal(s) for s in names))
        env_deadline = os.environ.get(ENV_DEADLINE)
        self.deadline = deadline if deadline is not None else (float(env_deadline) if env_deadline else None)
        self._reason: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    # -- requests ----------------------------------------------------------------------------
    def should_preempt(self) -> bool:
        """True once a stop was requested (signal, deadline, or :meth:`request`)."""
        if self._reason is None and self.deadline is not None and time.time() >= self.deadline:
            self._reason = "deadline"
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why a stop was requested: ``"signal SIGTERM"``, ``"deadline"``, ..., or None."""
        self.should_preempt()
        return self._reason

    def request(self, reason: str = "requested") -> None:
        """Ask the training to stop at the next step boundary."""
        if self._reason is None:
            self._reason = reason

    # -- signal handlers ---------------------------------------------------------------------
    def install(self) -> bool:
        """Install the handlers (main thread only; returns False elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return True

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGINT and self._reason is not None:
            raise KeyboardInterrupt
        if self._reason is None:
            self._reason = f"signal {signal.Signals(signum).name}"
