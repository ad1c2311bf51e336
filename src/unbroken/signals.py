"""Which signals may ask a training process to save and stop: known ones that can be caught."""

from __future__ import annotations

import signal

from .errors import ConfigError

#: Signals no process can catch, block or ignore (a stop request must be catchable to be acted on).
UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


def parse_signal(name: str | int | signal.Signals) -> signal.Signals:
    """``"USR2"``, ``"SIGUSR2"``, ``12`` -> ``signal.SIGUSR2``.

    Raises :class:`~unbroken.errors.ConfigError` for an unknown signal and for KILL and STOP,
    which a process cannot catch and so cannot answer with a save.
    """
    try:
        if isinstance(name, signal.Signals):
            sig = name
        elif isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
            sig = signal.Signals(int(name))
        else:
            upper = name.upper()
            sig = signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError, AttributeError):
        raise ConfigError(f"unknown signal {name!r}; use a name like USR2 or TERM") from None
    if sig in UNCATCHABLE:
        raise ConfigError(f"signal {sig.name} cannot be caught, so it cannot ask for a save-and-stop; "
                          "use a catchable one such as USR2 or TERM")
    return sig
