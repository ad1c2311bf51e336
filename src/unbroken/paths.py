"""Where a trial's files live: the one place that knows the folder layout under the home.

::

    <home>/unbroken.db                                            tracking index (SQLite)
    <home>/experiments/<experiment>/trial-<n>/checkpoints/<uuid>/  committed checkpoints
    <home>/experiments/<experiment>/trial-<n>/logs/attempt-<k>.log attempt logs (supervisor)
    <home>/experiments/<experiment>/trial-<n>/logs/requeue-progress.json  allocations without progress
    <home>/experiments/<experiment>/trial-<n>/.writer.lock         the one-writer lease of the trial
    <home>/experiments/<experiment>/slurm/                         logs of Slurm job arrays
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import check_name


@dataclasses.dataclass(frozen=True)
class TrialPaths:
    """The folders and files of one trial. Pure: nothing is created on disk."""

    home: Path
    experiment: str
    number: int

    def __post_init__(self) -> None:
        check_name(self.experiment)
        object.__setattr__(self, "number", int(self.number))

    @property
    def root(self) -> Path:
        """The trial's folder: everything below belongs to this trial."""
        return experiment_dir(self.home, self.experiment) / f"trial-{self.number}"

    @property
    def checkpoints(self) -> Path:
        """The checkpoint store's root (one folder per committed checkpoint)."""
        return self.root / "checkpoints"

    def checkpoint_location(self, storage_root: str | None) -> str:
        """The checkpoint folder of this trial under ``storage_root`` (a folder or a URL such as
        ``s3://bucket/prefix``); None: :attr:`checkpoints` in the home."""
        if storage_root is None:
            return str(self.checkpoints)
        relative = f"experiments/{self.experiment}/trial-{self.number}/checkpoints"
        return f"{storage_root.rstrip('/')}/{relative}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def attempt_log(self, attempt_number: int) -> Path:
        """The log file of one attempt (written by the supervisor)."""
        return self.logs / f"attempt-{int(attempt_number)}.log"

    @property
    def requeue_ledger(self) -> Path:
        """Allocations in a row without progress (the supervisor's no-endless-requeue rule)."""
        return self.logs / "requeue-progress.json"

    @property
    def writer_lock(self) -> Path:
        """The lock file of the trial's one-writer lease."""
        return self.root / ".writer.lock"


def experiment_dir(home: Path, experiment: str) -> Path:
    """The folder of one experiment (its trials are below it)."""
    return Path(home) / "experiments" / check_name(experiment)


def slurm_dir(home: Path, experiment: str) -> Path:
    """Where `unbroken slurm submit --array` keeps scripts and logs of an experiment."""
    return experiment_dir(home, experiment) / "slurm"


def trial_location(recorded: str | None, derived: str, *, explicit: bool, ref: str) -> str:
    """Where an existing trial's checkpoints are: the location the index recorded for it
    (``recorded``) or the one today's settings give (``derived``).

    A trial recorded on an object store stays there (a rerun without ``storage=`` finds it);
    a local one follows the home (a moved home keeps working). A storage given explicitly
    (argument or ``$UNBROKEN_STORAGE``) that disagrees with a recorded URL is a ConfigError.
    """
    if not recorded or "://" not in recorded:
        return derived
    if explicit and recorded.rstrip("/") != derived.rstrip("/"):
        from .errors import ConfigError  # noqa: PLC0415 - keep this module's imports minimal

        raise ConfigError(f"trial {ref} keeps its checkpoints in {recorded}, not {derived}: pass that storage "
                          "to resume it, or fresh=True (`--fresh`) to start a new trial there")
    return recorded
