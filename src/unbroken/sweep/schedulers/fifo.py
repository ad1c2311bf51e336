"""FIFO: every trial runs from start to end in one segment; nothing is stopped early."""

from __future__ import annotations

from .base import Scheduler


class FIFOScheduler(Scheduler):
    """Runs trials in order of their numbers, each to its end (the base behaviour)."""

    name = "fifo"
