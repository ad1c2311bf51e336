"""A save interval that tunes itself: Young/Daly from the measured save cost and the failure rate.

The interval that loses the least time to saving plus redoing lost work is about
``T = sqrt(2 * C * MTBF)`` (Young 1974; Daly 2006 to first order), where ``C`` is what one save
costs the training loop and ``MTBF`` the mean time between failures. :class:`auto_interval`
estimates both as the run goes:

* ``C``: the median of the last :data:`COST_WINDOW` measured costs (``observe_save``: the time
  training was blocked, the stall, for an asynchronous save); before the first measurement, the
  ``cost_hint`` (``init`` passes the stall of the trial's last recorded save, so a restarted
  attempt starts from its predecessor's measurement).
* ``MTBF``: failures counted in this trial's attempt history (``observe_history``) and the
  seconds they covered, the current attempt's uptime included, with the user's ``mtbf_hint`` as
  a prior worth ``prior_weight`` failures: ``(exposure + w * hint) / (failures + w)``. With no
  history the hint decides; every failure seen pulls the estimate toward the measured rate.

The interval is clamped to ``[min_seconds, max_seconds]`` and never shorter than the last
durable save took (one save in flight: a shorter interval would only make the next save wait).
:meth:`auto_interval.decision` says what was chosen and why (a log line included).

Pure: no I/O; the time comes from ``clock``, the measurements from the caller (the training
loop), so it is tested with a fake clock. Not thread-safe: call it from the training thread.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable, Iterable

from ..errors import ConfigError
from .policy import SavePolicy

#: Measured save costs kept for the median.
COST_WINDOW = 5


def young_daly(cost_s: float, mtbf_s: float) -> float:
    """The first-order optimal interval between saves, ``sqrt(2 * cost * MTBF)`` (seconds)."""
    return math.sqrt(2.0 * max(cost_s, 0.0) * max(mtbf_s, 0.0))


@dataclasses.dataclass(frozen=True)
class Decision:
    """The interval chosen and what it was computed from."""

    interval_s: float
    optimum_s: float      #: sqrt(2 C MTBF) before clamping
    cost_s: float
    cost_measured: bool   #: False while the cost is still the hint
    mtbf_s: float
    failures: int
    exposure_s: float     #: seconds of history the failures were counted in
    bound: str            #: "" or what clamped the optimum: "min_seconds", "max_seconds", "save time"

    def log_line(self) -> str:
        cost = f"save cost {self.cost_s:.3g} s ({'measured' if self.cost_measured else 'hint'})"
        mtbf = f"MTBF {_duration(self.mtbf_s)} ({self.failures} failure(s) in {_duration(self.exposure_s)} + prior)"
        clamp = f", held at {self.bound}" if self.bound else ""
        return (f"unbroken: saving every {_duration(self.interval_s)} (Young/Daly sqrt(2 C MTBF) = "
                f"{_duration(self.optimum_s)}: {cost}, {mtbf}{clamp})")


class auto_interval(SavePolicy):
    """Save every ``T`` seconds, ``T`` by Young/Daly from measurements; see the module docstring.

    ``mtbf_hint``: the expected mean time between failures in seconds (the prior); ``cost_hint``:
    the expected cost of one save before any was measured.
    """

    def __init__(self, mtbf_hint: float = 24 * 3600.0, *, cost_hint: float = 1.0, prior_weight: float = 1.0,
                 min_seconds: float = 30.0, max_seconds: float = 6 * 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        for name, value in (("mtbf_hint", mtbf_hint), ("cost_hint", cost_hint), ("prior_weight", prior_weight),
                            ("min_seconds", min_seconds), ("max_seconds", max_seconds)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"auto_interval({name}=...) needs a positive finite number, not {value!r}")
        if min_seconds > max_seconds:
            raise ConfigError(f"auto_interval: min_seconds {min_seconds} > max_seconds {max_seconds}")
        self.mtbf_hint, self.cost_hint, self.prior_weight = float(mtbf_hint), float(cost_hint), float(prior_weight)
        self.min_seconds, self.max_seconds = float(min_seconds), float(max_seconds)
        self._clock = clock
        self._started = clock()
        self._costs: list[float] = []
        self._save_s = 0.0
        self._past_failures = 0
        self._past_seconds = 0.0

    # -- what the loop tells it ---------------------------------------------------------------
    def observe_save(self, cost_s: float, save_s: float | None = None) -> None:
        """One save blocked training ``cost_s`` seconds; it was durable after ``save_s`` (if known)."""
        if math.isfinite(cost_s) and cost_s >= 0:
            self._costs = [*self._costs, float(cost_s)][-COST_WINDOW:]
        if save_s is not None and math.isfinite(save_s) and save_s >= 0:
            self._save_s = float(save_s)

    def observe_history(self, attempts: Iterable[tuple[float, bool]]) -> None:
        """This trial's earlier attempts: ``(seconds it ran, ended by a failure)`` each (replaces any
        earlier history; the current attempt counts by the clock from when this policy was made)."""
        attempts = [(max(0.0, float(s)), bool(failed)) for s, failed in attempts]
        self._past_seconds = sum(s for s, _ in attempts)
        self._past_failures = sum(1 for _, failed in attempts if failed)

    # -- the decision ---------------------------------------------------------------------------
    def decision(self) -> Decision:
        """The interval to use now, and why."""
        exposure = self._past_seconds + max(0.0, self._clock() - self._started)
        mtbf = (exposure + self.prior_weight * self.mtbf_hint) / (self._past_failures + self.prior_weight)
        cost = statistics.median(self._costs) if self._costs else self.cost_hint
        optimum = young_daly(cost, mtbf)
        interval, bound = optimum, ""
        for limit, name, wins in ((self.min_seconds, "min_seconds", optimum < self.min_seconds),
                                  (self.max_seconds, "max_seconds", optimum > self.max_seconds)):
            if wins:
                interval, bound = limit, name
        if interval < self._save_s:
            interval, bound = self._save_s, "save time"
        return Decision(interval, optimum, cost, bool(self._costs), mtbf, self._past_failures, exposure, bound)

    def due(self, steps_completed: int, last_steps: int, elapsed: float) -> bool:
        return steps_completed > last_steps and elapsed >= self.decision().interval_s

    def __repr__(self) -> str:
        return f"auto_interval(mtbf_hint={self.mtbf_hint:g})"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
