"""How an attempt ended, from the exception that left the ``with`` block (pure)."""

from __future__ import annotations

import traceback

from ..config import EXIT_PREEMPTED


def classify(exc: BaseException | None, preempted: bool, reason: str | None) -> tuple[str, str | None]:
    """``(end_reason, message)``: completed / preempted / cancelled / crashed.

    ``preempted``: the loop stopped (or must stop) because of a stop request, whose ``reason``
    goes into the message.
    """
    stopped = ("preempted", f"stopped on {reason}")
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
        return stopped if preempted else ("completed", None)
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled", "KeyboardInterrupt"
    if isinstance(exc, SystemExit) and exc.code == EXIT_PREEMPTED:
        return stopped
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return "crashed", last[:2000]
