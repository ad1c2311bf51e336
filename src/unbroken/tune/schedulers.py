"""Ray Tune's scheduler names (``ray.tune.schedulers``) on unbroken's schedulers."""

from ..sweep.schedulers import (ASHAScheduler, AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler,
                                PopulationBasedTraining)
from ..sweep.schedulers.base import Scheduler as TrialScheduler

__all__ = ["ASHAScheduler", "AsyncHyperBandScheduler", "FIFOScheduler", "HyperBandScheduler",
           "PopulationBasedTraining", "TrialScheduler"]
