"""Stop requests: signals and deadlines set a flag; the training loop acts at a step boundary.

Signal handlers do nothing but record the request (no I/O, no locks, no exit), as DESIGN.md
demands. A second SIGINT while a stop is pending raises KeyboardInterrupt at once, so an
impatient Ctrl-C still works.

When the handlers are installed: only once the script has a way to act on them, i.e. at its
first :meth:`PreemptContext.should_preempt` (``run.steps()`` and ``maybe_save`` ask it too).
A script that never asks keeps the default actions, so SIGTERM still ends it instead of being
swallowed forever. The handlers go back when the run closes.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable, Iterable

from ..signals import parse_signal

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT")
DEFAULT_EXTRA_SIGNAL = "SIGUSR2"  # Slurm's --signal; USR1 is taken by NCCL
class PreemptContext:
    """Knows whether the training should stop now: ``should_preempt()`` (``run.preempt``).

    Threads: ``should_preempt``/``request`` from any thread; handlers are installed (lazily)
    only from the main thread.
    """

    def __init__(self, signals: Iterable[str | int] | None = None, deadline: float | None = None,
                 extra_signal: str | None = None, clock: Callable[[], float] = time.time):
        names = list(signals) if signals is not None else [*DEFAULT_SIGNALS, extra_signal or DEFAULT_EXTRA_SIGNAL]
        self.signals = tuple(dict.fromkeys(parse_signal(s) for s in names))
        self.deadline = deadline
        self._clock = clock
        self._reason: str | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._armed = False
        self._closed = False

    # -- requests ----------------------------------------------------------------------------
    def should_preempt(self) -> bool:
        """True once a stop was requested (signal, deadline, or :meth:`request`).

        The first call installs the signal handlers (see the module docstring).
        """
        if not self._armed:
            self.install()
        if self._reason is None and self.deadline is not None and self._clock() >= self.deadline:
            self._reason = "deadline"
        return self._reason is not None

    def own_request(self) -> str | None:
        """This process's own stop request (why), or None; installs the handlers like :meth:`should_preempt`."""
        return self.reason if self.should_preempt() else None

    def settle(self, requests: list[str | None]) -> str | None:
        """The decision from every rank's :meth:`own_request` (in rank order): with one process, its own."""
        return next((r for r in requests if r), None)

    def agree(self) -> bool:
        """Stop now? The same answer on every rank of a group (there, a collective: one allgather;
        every rank calls it at the same point). With one process it is :meth:`should_preempt`."""
        return self.should_preempt()

    @property
    def reason(self) -> str | None:
        """Why a stop was requested: ``"signal SIGTERM"``, ``"deadline"``, ..., or None."""
        if self._reason is None and self.deadline is not None and self._clock() >= self.deadline:
            self._reason = "deadline"
        return self._reason

    def seconds_left(self) -> float | None:
        """Seconds until the deadline (negative once past it), or None without a deadline. Any thread."""
        return None if self.deadline is None else self.deadline - self._clock()

    @property
    def armed(self) -> bool:
        """True once the signal handlers are installed."""
        return self._armed

    def request(self, reason: str = "requested") -> None:
        """Ask the training to stop at the next step boundary."""
        if self._reason is None:
            self._reason = reason

    # -- signal handlers ---------------------------------------------------------------------
    def install(self) -> bool:
        """Install the handlers now (main thread only; returns False elsewhere or after close)."""
        if self._armed or self._closed or threading.current_thread() is not threading.main_thread():
            return self._armed
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        self._armed = True
        return True

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`; no more are installed."""
        self._closed = True
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        self._armed = False

    def _on_signal(self, signum: int, _frame) -> None:
        if signum == signal.SIGINT and self._reason is not None:
            raise KeyboardInterrupt
        if self._reason is None:
            self._reason = f"signal {signal.Signals(signum).name}"
