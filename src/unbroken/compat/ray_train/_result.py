"""``Result`` of ``fit()`` and the errors it raises, read from the experiment folder after the run.

``metrics`` are rank 0's last reported metrics (with ``training_iteration``), from the trial's
result file; ``checkpoint`` the newest committed checkpoint whose files verify; ``path`` the
trial's folder; ``best_checkpoints`` every kept checkpoint with the metrics reported with it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ...errors import UnbrokenError
from ...paths import TrialPaths
from ._checkpoint import Checkpoint, StoredRef
from ._session import RESULT_FILE
from ._stored import newest_checkpoint, read_trial, trial_checkpoints


class TrainingFailedError(UnbrokenError):
    """``fit()`` ended without completing: the workers failed more often than ``max_failures`` allows.

    The message names the trial, how it ended and where its logs are.
    """


@dataclasses.dataclass
class Result:
    """What a finished ``fit()`` gives back."""

    metrics: dict[str, Any] | None
    checkpoint: Checkpoint | None
    error: BaseException | None
    path: str
    best_checkpoints: list[tuple[Checkpoint, dict[str, Any]]] = dataclasses.field(default_factory=list)

    @property
    def filesystem(self) -> None:
        return None


def read_result(folder: Path, name: str) -> Result:
    """The Result of the newest trial of experiment ``name`` in the experiment folder ``folder``."""
    trial = read_trial(folder, name)
    trial_dir = TrialPaths(folder, name, trial.number).root
    found = newest_checkpoint(folder, trial)
    return Result(metrics=_last_metrics(trial_dir), checkpoint=found[0] if found else None, error=None,
                  path=str(trial_dir), best_checkpoints=_kept(folder, trial))


def _last_metrics(trial_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((trial_dir / RESULT_FILE).read_text())["metrics"]
    except (OSError, ValueError, KeyError):
        return None


def _kept(folder: Path, trial: Any) -> list[tuple[Checkpoint, dict[str, Any]]]:
    store = trial_checkpoints(folder, trial)
    kept = []
    for manifest in store.list():
        ref = StoredRef(str(folder), trial.experiment, trial.number, manifest.uuid)
        checkpoint = Checkpoint(store.local_path(manifest.uuid) or manifest.uuid, stored=ref)
        kept.append((checkpoint, manifest.metadata.get("metrics") or {}))
    return kept


def failure_message(folder: Path, name: str, code: int) -> str:
    """Why the run of ``name`` failed, from the index (its trial's status and last message)."""
    try:
        trial = read_trial(folder, name)
    except UnbrokenError:
        return f"the supervisor of {name} exited with status {code} before the trial started"
    logs = TrialPaths(folder, name, trial.number).logs
    return (f"trial {trial.ref} {trial.status} (exit status {code}): {trial.message or 'no message'}; "
            f"logs in {logs}")
