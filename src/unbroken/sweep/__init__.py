"""Hyperparameter sweeps whose trials are ordinary unbroken trials (they resume, restart, keep history).

Define a sweep in Python (:class:`SweepSpec`) or a YAML file (:func:`load_spec`), run it with
:func:`run_sweep` or ``unbroken sweep run FILE -- CMD``; kill the driver at any moment and run
it again to continue. Trial code uses :func:`trial` (commands), a :class:`Trainable`, or the
function API (:func:`report`, :func:`get_checkpoint`); :mod:`unbroken.tune` offers the same
with Ray Tune's names. See :mod:`.driver` for how a sweep runs.
"""

from .driver import Driver, SweepStopped, run_sweep, sweep_folder
from .function_api import Checkpoint, get_checkpoint, report
from .results import SweepAnalysis, TrialResult
from .schedulers import (ASHAScheduler, AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler,
                         PopulationBasedTraining)
from .searchers import BasicSearcher, GridSearcher
from .session import TrialSession, trial
from .space import choice, grid_search, loguniform, randint, uniform
from .spec import SweepSpec, load_spec
from .trainable import Trainable

__all__ = [
    "ASHAScheduler", "AsyncHyperBandScheduler", "BasicSearcher", "Checkpoint", "Driver", "FIFOScheduler",
    "GridSearcher", "HyperBandScheduler", "PopulationBasedTraining", "SweepAnalysis", "SweepSpec", "SweepStopped",
    "Trainable", "TrialResult", "TrialSession", "choice", "get_checkpoint", "grid_search", "load_spec",
    "loguniform", "randint", "report", "run_sweep", "sweep_folder", "trial", "uniform",
]
