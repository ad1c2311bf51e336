"""Reading a trial's committed checkpoints outside a Run (the driver, ``Result.checkpoint``) and inside one.

The experiment folder is an unbroken home: ``unbroken.db`` names the trial, and the trial's
checkpoint store is where the index recorded it (:func:`unbroken.checkpoint.store.trialstore.trial_store`).
Nothing here writes the index. Raises TrialNotFound/TrackingError for a folder without the trial,
CorruptCheckpoint for a checkpoint that fails verification, CheckpointGone for one deleted meanwhile.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from ...checkpoint import CheckpointStore, Manifest
from ...checkpoint.store.trialstore import trial_store
from ...config import DB_FILENAME
from ...tracking import Tracker, Trial
from ._checkpoint import Checkpoint, StoredRef


def read_trial(home: Path, experiment: str, number: int | None = None) -> Trial:
    """The trial (the newest when ``number`` is None) from the index in ``home``."""
    with contextlib.closing(Tracker.open_readonly(Path(home) / DB_FILENAME)) as tracker:
        return tracker.trial(experiment, number)


def trial_checkpoints(home: Path, trial: Trial) -> CheckpointStore:
    """The checkpoint store of ``trial`` (its files where the index recorded them)."""
    return trial_store(Path(home), trial, None)


@contextlib.contextmanager
def open_from_store(ref: StoredRef) -> Iterator[tuple[Path, list[str]]]:
    """Lease and verify ``ref``; yield its local folder and its files' relative paths."""
    store = trial_checkpoints(Path(ref.home), read_trial(Path(ref.home), ref.experiment, ref.trial))
    with store.reading(ref.uuid) as manifest:
        store.verify(ref.uuid)
        yield store.local_copy(ref.uuid), [f.path for f in manifest.files]


def newest_checkpoint(home: Path, trial: Trial) -> tuple[Checkpoint, Manifest] | None:
    """The newest committed checkpoint of ``trial`` whose files verify (and its manifest), or None."""
    store = trial_checkpoints(home, trial)
    manifest = store.newest_good()
    if manifest is None:
        return None
    ref = StoredRef(str(home), trial.experiment, trial.number, manifest.uuid)
    return Checkpoint(store.local_path(manifest.uuid) or manifest.uuid, stored=ref), manifest
