"""Trial schedulers: FIFO, ASHA, HyperBand (pause and resume), PBT (exploit and explore).

Pure objects (see :mod:`.base`); :func:`make_scheduler` builds one from a file's
``scheduler: {type: asha, ...}``.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ..forms import kind_and_options
from .asha import ASHAScheduler, AsyncHyperBandScheduler
from .base import Decision, Scheduler, TrialView
from .fifo import FIFOScheduler
from .hyperband import HyperBandScheduler
from .pbt import PopulationBasedTraining

TYPES = {"fifo": FIFOScheduler, "asha": ASHAScheduler, "hyperband": HyperBandScheduler, "pbt": PopulationBasedTraining}


def make_scheduler(raw: Any) -> Scheduler:
    """A scheduler from ``{type: NAME, ...options}``, a name, None (FIFO) or a Scheduler."""
    if isinstance(raw, Scheduler):
        return raw
    kind, options = kind_and_options(raw, "type", "scheduler", "{type: asha, max_t: 8}", "fifo")
    cls = TYPES.get(kind)
    if cls is None:
        raise ConfigError(f"unknown scheduler {kind!r}; known: {', '.join(TYPES)}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"scheduler {kind}: {exc}") from None


__all__ = ["ASHAScheduler", "AsyncHyperBandScheduler", "Decision", "FIFOScheduler", "HyperBandScheduler",
           "PopulationBasedTraining", "Scheduler", "TrialView", "make_scheduler"]
