"""HyperBand with synchronous brackets: trials pause at each rung (saving a checkpoint) until
every trial of their bracket reached it; the best ``1 / reduction_factor`` resume from their
checkpoints with the next budget, the others stop.

Brackets as in Li et al. and Ray Tune's ``HyperBandScheduler``: with ``s_max = floor(log_eta
max_t)``, bracket ``s`` (from ``s_max`` down to 0) holds ``ceil((s_max + 1) / (s + 1) * eta**s)``
trials that start with a budget of ``max_t / eta**s`` iterations. Trials fill the brackets in
the order of their numbers; after the last bracket a new band starts. A bracket's members are
therefore known from the numbers alone, and its decisions do not depend on timing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from .base import WAIT, Decision, Scheduler, TrialView, go_on, positive_int, reduction, stop


@dataclasses.dataclass(frozen=True)
class Bracket:
    first: int  # number of its first trial
    size: int
    budgets: tuple[int, ...]  # rung budgets, the last one max_t

    def members(self, total: int) -> range:
        return range(self.first, min(self.first + self.size, total + 1))


class HyperBandScheduler(Scheduler):
    """See the module docstring."""

    name = "hyperband"
    needs_checkpoints = True

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None, mode: str | None = None,
                 max_t: int = 81, reduction_factor: float = 3, stop_last_trials: bool = True):
        super().__init__(metric, mode, time_attr)
        self.max_t = positive_int(max_t, "hyperband max_t")
        self.eta = reduction(reduction_factor)
        self.s_max = int(math.floor(math.log(self.max_t) / math.log(self.eta) + 1e-9))
        self.shapes = [(math.ceil((self.s_max + 1) / (s + 1) * self.eta ** s), self._budgets(s))
                       for s in range(self.s_max, -1, -1)]

    def _budgets(self, s: int) -> tuple[int, ...]:
        budgets = []
        for k in range(s + 1):
            budget = min(self.max_t, max(1, int(round(self.max_t * self.eta ** (k - s)))))
            if not budgets or budget > budgets[-1]:
                budgets.append(budget)
        return tuple(budgets)

    def uses_metric(self) -> bool:
        return True

    def bracket_of(self, number: int) -> Bracket:
        """The bracket that trial ``number`` belongs to."""
        band = sum(size for size, _ in self.shapes)
        offset = ((number - 1) // band) * band
        start = offset + 1
        for size, budgets in self.shapes:
            if number < start + size:
                return Bracket(start, size, budgets)
            start += size
        raise AssertionError("unreachable: a band covers every number")

    def first_stop(self, number: int) -> int:
        return self.bracket_of(number).budgets[0]

    def decide(self, number: int, trials: Mapping[int, TrialView]) -> Decision:
        me = trials[number]
        bracket = self.bracket_of(number)
        t = me.iteration
        if t >= self.max_t:
            return stop(f"reached max_t={self.max_t}")
        if t not in bracket.budgets or t not in me.results:
            return go_on(next((b for b in bracket.budgets if b > t), self.max_t))
        peers = [trials.get(n) for n in bracket.members(self.total)]
        if any(p is None or (t not in p.results and not p.ended()) for p in peers):
            return WAIT
        ranked = self.ranked([p for p in peers if p is not None], t)
        keep = max(1, int(len(ranked) // self.eta))
        if number not in [v.number for v in ranked[:keep]]:
            return stop(f"stopped by HyperBand at budget {t}: not in the best {keep} of {len(ranked)} "
                        f"(bracket of trials {bracket.first}-{bracket.members(self.total)[-1]})")
        return go_on(next(b for b in bracket.budgets if b > t))

    def describe(self):
        return {"type": self.name, "max_t": self.max_t, "reduction_factor": self.eta, "metric": self.metric,
                "mode": self.mode}
