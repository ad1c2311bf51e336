"""The checkpoint store of a trial: the one place that turns (home, storage setting, trial) into a store.

Used by ``unbroken.init()``, the supervisor, ``slurm submit`` and the CLI, so they all agree on
where a trial's checkpoints are (see :func:`unbroken.paths.trial_location`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...config import resolve_cache_dir
from ...paths import TrialPaths, trial_location
from ...storage import open_storage
from ...tracking import Trial
from .catalog import CheckpointStore


def location_of(home: Path, experiment: str, storage_root: str | None) -> Callable[[int], str]:
    """``number -> checkpoint location`` for trials created now (``join_trial(storage_of=...)``)."""
    return lambda number: TrialPaths(home, experiment, number).checkpoint_location(storage_root)


def trial_store(home: Path, trial: Trial, storage_root: str | None) -> CheckpointStore:
    """The store of ``trial``'s checkpoints: where the index recorded them, or where today's
    settings put them (``storage_root``: a folder or URL; None: the home).

    Raises ConfigError when an explicit ``storage_root`` contradicts the trial's recorded URL,
    ConfigError/StorageError for an unusable URL.
    """
    derived = TrialPaths(home, trial.experiment, trial.number).checkpoint_location(storage_root)
    location = trial_location(trial.storage, derived, explicit=storage_root is not None, ref=trial.ref)
    storage = open_storage(location, cache_dir=resolve_cache_dir(home))
    return CheckpointStore(storage, trial={"experiment": trial.experiment, "trial": trial.number})
