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


# -- saving before a known deadline ---------------------------------------------------------------
#: A save is assumed to take this long (call -> committed) until one was measured (the
#: supervisor's --margin covers slower first saves: its deadline is that much before the end).
DEFAULT_SAVE_SECONDS = 1.0
#: Estimates are multiplied by this before they are compared with the time left.
SAFETY_FACTOR = 1.5


class DurationEstimate:
    """A conservative duration: the longest of the last ``window`` measurements (None before any).

    ``add`` may be called from another thread than ``value`` (the writer thread reports save
    durations): both only touch a list under the GIL, appending and slicing.
    """

    def __init__(self, window: int = 8):
        self.window = window
        self._recent: list[float] = []

    def add(self, seconds: float) -> None:
        self._recent = [*self._recent[-(self.window - 1):], max(0.0, float(seconds))]

    @property
    def value(self) -> float | None:
        recent = self._recent
        return max(recent) if recent else None


def stop_before_deadline(seconds_left: float, step_s: float, save_s: float | None, in_flight_s: float = 0.0,
                         safety: float = SAFETY_FACTOR) -> bool:
    """Pure: should the loop save and stop at this step boundary to have its checkpoint committed in time?

    ``seconds_left``: until the deadline; ``step_s``: one more step (estimate); ``save_s``: a save
    from the call until committed (estimate; None: not measured yet, ``DEFAULT_SAVE_SECONDS``);
    ``in_flight_s``: what the save in flight still needs. True when, after one more step, the
    final save would not be committed before the deadline, so this boundary is the last safe
    one, given the estimates times ``safety``. (A save the policy starts after that step is the
    same cost: the stop then only waits for it.)
    """
    save = DEFAULT_SAVE_SECONDS if save_s is None else save_s
    return safety * (step_s + max(0.0, in_flight_s - step_s) + save) >= seconds_left
