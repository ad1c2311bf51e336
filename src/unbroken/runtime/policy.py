"""Save policies: when the step iterator writes a checkpoint.

Policies are small pure objects combined with ``|`` (save when any says so)::

    save = every_steps(500) | every_seconds(600)

A preemption and the end of the loop always save, whatever the policy.
"""

from __future__ import annotations

from ..errors import ConfigError


class SavePolicy:
    """``due(steps_completed, steps_at_last_save, seconds_since_last_save) -> bool``."""

    def due(self, steps_completed: int, last_steps: int, elapsed: float) -> bool:
        raise NotImplementedError

    def __or__(self, other: "SavePolicy") -> "SavePolicy":
        if not isinstance(other, SavePolicy):
            return NotImplemented
        return _Any((self, other))


class _Any(SavePolicy):
    def __init__(self, policies):
        self.policies = tuple(policies)

    def due(self, steps_completed, last_steps, elapsed):
        return any(p.due(steps_completed, last_steps, elapsed) for p in self.policies)

    def __repr__(self):
        return " | ".join(map(repr, self.policies))


class every_steps(SavePolicy):
    """Save when ``steps_completed`` is a multiple of ``n``."""

    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"every_steps(n) needs a positive integer, not {n!r}")
        self.n = n

    def due(self, steps_completed, last_steps, elapsed):
        return steps_completed > last_steps and steps_completed % self.n == 0

    def __repr__(self):
        return f"every_steps({self.n})"


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
