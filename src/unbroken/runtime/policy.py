"""Save policies: when the step iterator writes a checkpoint.

Policies are small pure objects combined with ``|`` (save when any says so)::

    save = every_steps(500) | every_seconds(600)

A preemption and the end of the loop always save, whatever the policy.
"""

from __future__ import annotations

from .._policy import Combinable, Counted, Union
from ..errors import ConfigError


class SavePolicy(Combinable, family=True):
    """``due(steps_completed, steps_at_last_save, seconds_since_last_save) -> bool``."""

    def due(self, steps_completed: int, last_steps: int, elapsed: float) -> bool:
        raise NotImplementedError


class _Any(Union, SavePolicy):
    def due(self, steps_completed, last_steps, elapsed):
        return any(p.due(steps_completed, last_steps, elapsed) for p in self.policies)


SavePolicy.Union = _Any


class every_steps(Counted, SavePolicy):
    """Save when ``steps_completed`` is a multiple of ``n``."""

    def due(self, steps_completed, last_steps, elapsed):
        return steps_completed > last_steps and steps_completed % self.n == 0


class every_seconds(SavePolicy):
    """Save when at least ``seconds`` passed since the last save (or the start)."""

    def __init__(self, seconds: float):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ConfigError(f"every_seconds(s) needs a positive number, not {seconds!r}")
        self.seconds = float(seconds)

    def due(self, steps_completed, last_steps, elapsed):
        return steps_completed > last_steps and elapsed >= self.seconds

    def __repr__(self):
        return f"every_seconds({self.seconds:g})"


class never(SavePolicy):
    """Only the preemption and end-of-loop saves."""

    def due(self, steps_completed, last_steps, elapsed):
        return False

    def __repr__(self):
        return "never()"
