"""Index writes that never decide an outcome: a failure is one warning with its real cause.

The index is for people; the checkpoints are the truth. A training, or the supervisor watching
it, must never fail, stop early or skip a requeue because the index cannot be written (disk
full, a locked or damaged database, a server gone). :class:`GuardedWrites` calls a tracker
method and turns such a failure into an :class:`~unbroken.errors.IndexWarning` (once per
guard; later ones are logged) and a None result. Thread-safe: the tracker serialises itself.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

from ..errors import ConfigError, IndexWarning, TrackingError

log = logging.getLogger("unbroken")


class GuardedWrites:
    """``guard(what, method, *args, **kwargs)``: the method's result, or None after a warning."""

    def __init__(self) -> None:
        self.failures = 0

    def __call__(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (TrackingError, ConfigError) as exc:
            self.failures += 1
            if self.failures == 1:
                warnings.warn(f"could not {what} in the tracking index: {exc}. The run goes on; run "
                              "`unbroken reindex` later to catch the index up with the checkpoints",
                              IndexWarning, stacklevel=3)
            log.warning("unbroken: could not %s in the tracking index: %s", what, exc)
            return None
