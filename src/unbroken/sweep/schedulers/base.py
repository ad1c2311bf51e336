"""What every scheduler shares: the view of a trial it decides on, its decisions, ranking.

A scheduler is a pure object. The driver runs each trial in *segments*: a segment ends when the
trial reaches the iteration the scheduler asked for (``stop_at``), saves a checkpoint and
reports its result there, or when the trial is done. For a trial paused at the end of a
segment the driver asks :meth:`Scheduler.decide`, which answers from the recorded results
alone (no hidden state, no clock), so:

* a restarted driver that replays the recorded results makes the same decisions (resume);
* decisions do not depend on which trial happened to finish first: where a rule compares a
  trial with others (ASHA's rungs, HyperBand's brackets, PBT's generations) it waits until
  the results it compares with are all in, in the order of trial numbers.

Iterations are ``training_iteration``: the number of results a trial reported (a Trainable's
``step()`` calls), counted across restarts from the checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from ...errors import ConfigError

#: States of a trial as schedulers see them. ``running`` includes trials about to run.
RUNNING, PAUSED, TERMINATED, ERROR = "running", "paused", "terminated", "error"
TIME_ATTR = "training_iteration"


@dataclasses.dataclass(frozen=True)
class TrialView:
    """One trial as a scheduler sees it: config, results at segment ends, state, last iteration."""

    number: int
    config: Mapping[str, Any]
    results: Mapping[int, Mapping[str, Any]]
    state: str
    iteration: int = 0

    def ended(self) -> bool:
        return self.state in (TERMINATED, ERROR)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a paused trial does next: ``continue`` to ``stop_at`` (None: to its end), ``stop``, or
    ``wait`` for other trials' results. ``config``: its new config; ``exploit``:
    ``{"donor": number, "iteration": t}``, continue from that trial's checkpoint at t."""

    action: str
    stop_at: int | None = None
    config: Mapping[str, Any] | None = None
    exploit: Mapping[str, int] | None = None
    reason: str = ""


WAIT = Decision("wait")


def go_on(stop_at: int | None, **extra: Any) -> Decision:
    return Decision("continue", stop_at, **extra)


def stop(reason: str) -> Decision:
    return Decision("stop", reason=reason)


class Scheduler:
    """Base class: FIFO behaviour (each trial runs to its end in one segment)."""

    name = "fifo"
    #: True when the scheduler pauses and resumes or copies trials through checkpoints.
    needs_checkpoints = False

    def __init__(self, metric: str | None = None, mode: str | None = None, time_attr: str = TIME_ATTR):
        if time_attr != TIME_ATTR:
            raise ConfigError(f"{self.name}: only time_attr={TIME_ATTR!r} is supported (iterations are what a "
                              f"trial resumes at exactly), not {time_attr!r}")
        self.metric, self.mode, self.total = metric, mode, 0

    def bind(self, metric: str | None, mode: str | None, total: int) -> None:
        """Take the sweep's metric and mode where none was given; check them; learn the trial count."""
        self.metric, self.mode, self.total = self.metric or metric, self.mode or mode, total
        if self.uses_metric() and (self.metric is None or self.mode not in ("min", "max")):
            raise ConfigError(f"scheduler {self.name} needs a metric and a mode ('min' or 'max'): set them on "
                              "the sweep or the scheduler")

    def uses_metric(self) -> bool:
        return False

    def first_stop(self, number: int) -> int | None:
        """Where trial ``number``'s first segment ends (None: at the trial's end)."""
        return None

    def decide(self, number: int, trials: Mapping[int, TrialView]) -> Decision:
        """What trial ``number``, paused at ``trials[number].iteration``, does next."""
        return go_on(None)

    def describe(self) -> dict[str, Any]:
        """The scheduler's parameters (a resumed sweep must use the same)."""
        return {"type": self.name}

    # -- helpers for subclasses ------------------------------------------------------------------
    def score(self, result: Mapping[str, Any]) -> float:
        """The result's metric, larger is better (negated for mode ``min``); NaN when unusable."""
        value = result.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return math.nan
        return float(value) if self.mode == "max" else -float(value)

    def ranked(self, views: list[TrialView], iteration: int) -> list[TrialView]:
        """``views`` with a result at ``iteration``, best first (ties: lower trial number first)."""
        usable = [v for v in views if iteration in v.results]
        return sorted(usable, key=lambda v: (-_or_low(self.score(v.results[iteration])), v.number))


def _or_low(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a whole number >= 1, not {value!r}")
    return value


def reduction(value: Any, what: str = "reduction_factor") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1:
        raise ConfigError(f"{what} must be a number > 1, not {value!r}")
    return value
