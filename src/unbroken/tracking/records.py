"""The rows of the tracking index as frozen dataclasses, and their conversion from SQL rows
(selected by :mod:`.tables`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named piece of work (one command or one sweep); holds trials."""

    id: int
    name: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training run with fixed hyperparameters: the thing that resumes."""

    id: int
    experiment: str
    number: int
    hparams: dict[str, Any]
    status: str
    message: str | None
    storage: str
    command: str | None
    steps_completed: int
    progress: float | None
    created_at: float
    updated_at: float

    @property
    def ref(self) -> str:
        """``experiment/number``, the name people use for a trial."""
        return f"{self.experiment}/{self.number}"


@dataclasses.dataclass(frozen=True)
class Attempt:
    id: int
    trial_id: int
    number: int
    started_at: float
    ended_at: float | None
    host: str | None
    pid: int | None
    launcher: str
    exit_code: int | None
    signal: int | None
    end_reason: str | None
    message: str | None
    log_path: str | None
    restored_uuid: str | None
    restored_steps: int | None
    slurm_job_id: str | None
    slurm_array_task: str | None
    slurm_nodes: str | None
    slurm_restarts: int | None
    #: Start time of the process ``pid`` (Unix seconds); None for rows of older versions.
    pid_start: float | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
    uuid: str
    trial_id: int
    attempt_id: int | None
    steps_completed: int
    created_at: float
    size_bytes: int
    state: str
    message: str | None
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class MetricPoint:
    group: str
    steps_completed: int
    name: str
    value: float | None
    time: float
    attempt_id: int | None


ATTEMPT_COLUMNS = [f.name for f in dataclasses.fields(Attempt)]


def trial_of(row: tuple) -> Trial:
    return Trial(row[0], row[1], row[2], json.loads(row[3]), *row[4:])


def checkpoint_of(row: tuple) -> CheckpointRecord:
    return CheckpointRecord(*row[:8], json.loads(row[8]))


def to_json(value: Any, what: str) -> str:
    """``value`` as canonical JSON (sorted keys); ConfigError naming ``what`` if it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON (numbers, strings, lists, dicts): {exc}") from None
