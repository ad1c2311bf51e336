"""ASHA (asynchronous successive halving): stop trials whose result at a rung is not in the top
``1 / reduction_factor`` of the results recorded at that rung.

Rungs are at ``grace_period * reduction_factor**k`` iterations, below ``max_t``; every trial
stops at ``max_t``. As in Ray Tune's ``AsyncHyperBandScheduler``, a trial at a rung is compared
with the trials that reached the rung before it, and it goes on if its result is at least the
``(1 - 1/reduction_factor)`` percentile of theirs (the first trial at a rung always goes on).

"Before it" is by trial number, not by clock: trial ``n`` at a rung waits (paused, its state
saved) until every trial numbered below ``n`` has either reported at that rung or ended before
it. So the decisions equal those of a run where trials arrive at each rung in order, however
the trials were timed, killed or restarted.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ...errors import ConfigError
from .base import WAIT, Decision, Scheduler, TrialView, go_on, positive_int, reduction, stop


class ASHAScheduler(Scheduler):
    """See the module docstring. ``brackets`` other than 1 are not supported."""

    name = "asha"

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None, mode: str | None = None,
                 max_t: int = 100, grace_period: int = 1, reduction_factor: float = 4, brackets: int = 1,
                 stop_last_trials: bool = True):
        super().__init__(metric, mode, time_attr)
        self.max_t = positive_int(max_t, "asha max_t")
        self.grace_period = positive_int(grace_period, "asha grace_period")
        self.reduction_factor = reduction(reduction_factor)
        if brackets != 1:
            raise ConfigError("asha: only brackets=1 is supported (use hyperband for several brackets)")
        if self.grace_period > self.max_t:
            raise ConfigError(f"asha: grace_period ({grace_period}) must not exceed max_t ({max_t})")
        rungs, k = [], 0
        while round(self.grace_period * self.reduction_factor ** k) < self.max_t:
            rung = int(round(self.grace_period * self.reduction_factor ** k))
            if not rungs or rung > rungs[-1]:
                rungs.append(rung)
            k += 1
        self.rungs = rungs

    def uses_metric(self) -> bool:
        return True

    def first_stop(self, number: int) -> int:
        return self.rungs[0] if self.rungs else self.max_t

    def _next_stop(self, iteration: int) -> int:
        return next((r for r in self.rungs if r > iteration), self.max_t)

    def decide(self, number: int, trials: Mapping[int, TrialView]) -> Decision:
        me = trials[number]
        t = me.iteration
        if t >= self.max_t:
            return stop(f"reached max_t={self.max_t}")
        if t not in self.rungs or t not in me.results:
            return go_on(self._next_stop(t))
        earlier = [v for n, v in trials.items() if n < number]
        if any(t not in v.results and not v.ended() for v in earlier):
            return WAIT
        recorded = [self.score(v.results[t]) for v in earlier if t in v.results]
        recorded = [r for r in recorded if not math.isnan(r)]
        mine = self.score(me.results[t])
        if recorded:
            cutoff = float(np.percentile(recorded, (1 - 1 / self.reduction_factor) * 100))
            if math.isnan(mine) or mine < cutoff:
                return stop(f"stopped by ASHA at rung {t}: {self.metric}={me.results[t].get(self.metric)!r} is not "
                            f"in the top 1/{self.reduction_factor:g} of {len(recorded) + 1}")
        return go_on(self._next_stop(t))

    def describe(self):
        return {"type": self.name, "max_t": self.max_t, "grace_period": self.grace_period,
                "reduction_factor": self.reduction_factor, "metric": self.metric, "mode": self.mode}


AsyncHyperBandScheduler = ASHAScheduler
