"""Restart policies: pure functions of the attempt history, combined like tenacity's.

An :class:`Outcome` describes one finished attempt. A *stop* policy says whether to give up
after a failure; a *wait* policy says how long to sleep before the next attempt::

    stop = max_failures(3) | max_total_failures(50)
    wait = exponential_backoff(initial=1, maximum=60)

Only crashes are failures. Preemptions are not. Progress (a new committed checkpoint during the
attempt) resets the failure count, so one flaky node a day cannot end a week-long run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from .._policy import Combinable, Counted, Union
from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``kind`` is completed / crashed / preempted / cancelled."""

    kind: str
    progressed: bool = False
    exit_code: int | None = None
    signal: int | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.kind == "crashed"


def failures_since_progress(history: Sequence[Outcome]) -> int:
    """Failures counted back to (and including) the last attempt that made progress."""
    count = 0
    for outcome in reversed(history):
        if outcome.failed:
            count += 1
        if outcome.progressed:
            break
    return count


class StopPolicy(Combinable, family=True):
    """``should_stop(history) -> bool`` after a failure; combine with ``|`` (stop if any says so)."""

    def should_stop(self, history: Sequence[Outcome]) -> bool:
        raise NotImplementedError


class _AnyStop(Union, StopPolicy):
    def should_stop(self, history):
        return any(p.should_stop(history) for p in self.policies)


StopPolicy.Union = _AnyStop


class max_failures(Counted, StopPolicy):
    """Give up when more than ``n`` restarts would be needed since the last progress."""

    minimum = 0

    def should_stop(self, history):
        return failures_since_progress(history) > self.n


class max_total_failures(Counted, StopPolicy):
    """Give up after more than ``n`` failures in all, progress or not (a safety net)."""

    minimum = 0

    def should_stop(self, history):
        return sum(o.failed for o in history) > self.n



class WaitPolicy:
    """``delay(history) -> seconds`` before the next attempt."""

    def delay(self, history: Sequence[Outcome]) -> float:
        raise NotImplementedError


class exponential_backoff(WaitPolicy):
    """``initial * factor**(k-1)`` seconds for the k-th failure since progress, at most ``maximum``.

    Preemptions restart at once.
    """

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0):
        if not all(map(math.isfinite, (initial, maximum, factor))) or initial < 0 or maximum < initial or factor < 1:
            raise ConfigError("exponential_backoff needs finite 0 <= initial <= maximum and factor >= 1, "
                              f"not ({initial!r}, {maximum!r}, {factor!r})")
        self.initial, self.maximum, self.factor = float(initial), float(maximum), float(factor)

    def delay(self, history):
        if not history or not history[-1].failed:
            return 0.0
        k = failures_since_progress(history)
        return min(self.maximum, self.initial * self.factor ** (k - 1))

    def __repr__(self):
        return f"exponential_backoff({self.initial:g}, {self.maximum:g}, {self.factor:g})"
