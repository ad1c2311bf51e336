"""Which signals may ask a training process to save and stop: known ones that can be caught."""

from __future__ import annotations

import signal

from ..errors import ConfigError
from ..runtime.preempt import parse_signal

#: Signals no process can catch, block or ignore (a stop request must be catchable to be acted on).
UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


def stop_signal(name: str | int | signal.Signals) -> signal.Signals:
    """``"USR2"``, ``"SIGUSR2"``, ``12`` -> ``signal.SIGUSR2``.

    Raises :class:`~unbroken.errors.ConfigError` for an unknown signal and for KILL and STOP,
    which a process cannot catch and so cannot answer with a save.
    """
    sig = parse_signal(name)
    if sig in UNCATCHABLE:
        raise ConfigError(f"signal {sig.name} cannot be caught, so it cannot ask for a save-and-stop; "
                          "use a catchable one such as USR2 or TERM")
    return sig
