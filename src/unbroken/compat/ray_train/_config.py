"""Ray Train's configuration objects: ScalingConfig, FailureConfig, CheckpointConfig, RunConfig.

Plain dataclasses validated when built: a bad value raises :class:`~unbroken.errors.ConfigError`
naming the field and what to pass instead. Options that only make sense on a Ray cluster
(``resources_per_worker``, ``placement_strategy``, ``storage_filesystem``, callbacks, ...) are
accepted and ignored where harmless; ones that would change what runs are refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

from ...checkpoint import RetentionPolicy, keep_all, keep_best, keep_latest
from ...config import check_name
from ...errors import ConfigError

#: Where Ray keeps experiments when ``RunConfig(storage_path=None)``.
DEFAULT_STORAGE_PATH = "~/ray_results"


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an int >= {minimum}, not {value!r}")
    return value


@dataclasses.dataclass
class ScalingConfig:
    """How many workers run ``train_loop_per_worker`` (ranks of one torch.distributed group on this machine)."""

    num_workers: int | None = None
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    trainer_resources: dict[str, float] | None = None
    placement_strategy: str = "PACK"
    accelerator_type: str | None = None

    def __post_init__(self) -> None:
        if self.num_workers is None:
            self.num_workers = 1
        _check_int(self.num_workers, "ScalingConfig(num_workers=...)", 1)
        if not isinstance(self.use_gpu, bool):
            raise ConfigError(f"ScalingConfig(use_gpu=...) must be True or False, not {self.use_gpu!r}")


@dataclasses.dataclass
class FailureConfig:
    """``max_failures``: restarts of the whole group allowed in all (-1: no limit, 0: none)."""

    max_failures: int = 0
    fail_fast: bool | str = False

    def __post_init__(self) -> None:
        _check_int(self.max_failures, "FailureConfig(max_failures=...)", -1)
        if not (isinstance(self.fail_fast, bool) or str(self.fail_fast).upper() == "RAISE"):
            raise ConfigError(f"FailureConfig(fail_fast=...) must be True, False or 'raise', not {self.fail_fast!r}")
        if self.fail_fast and self.max_failures != 0:
            raise ConfigError(f"FailureConfig(max_failures=...) must be 0 with fail_fast={self.fail_fast!r}")


@dataclasses.dataclass
class CheckpointConfig:
    """Which reported checkpoints are kept: the newest ``num_to_keep`` (None: all), or the best by a metric."""

    num_to_keep: int | None = None
    checkpoint_score_attribute: str | None = None
    checkpoint_score_order: str = "max"

    def __post_init__(self) -> None:
        if self.num_to_keep is not None:
            _check_int(self.num_to_keep, "CheckpointConfig(num_to_keep=...)", 1)
        if self.checkpoint_score_order not in ("max", "min"):
            raise ConfigError(f"CheckpointConfig(checkpoint_score_order=...) is 'max' or 'min', "
                              f"not {self.checkpoint_score_order!r}")

    def retention(self) -> RetentionPolicy:
        """The unbroken retention policy that keeps what this config keeps."""
        if self.num_to_keep is None:
            return keep_all()
        if self.checkpoint_score_attribute:
            return keep_best(self.num_to_keep, self.checkpoint_score_attribute, self.checkpoint_score_order)
        return keep_latest(self.num_to_keep)


@dataclasses.dataclass
class RunConfig:
    """Where the experiment lives (``storage_path/name``, a local or shared folder) and how it fails."""

    name: str | None = None
    storage_path: str | os.PathLike | None = None
    failure_config: FailureConfig | None = None
    checkpoint_config: CheckpointConfig | None = None
    storage_filesystem: Any = None
    verbose: Any = None
    stop: Any = None
    callbacks: Any = None

    def __post_init__(self) -> None:
        if self.storage_filesystem is not None:
            raise ConfigError("RunConfig(storage_filesystem=...) is not supported: give storage_path as a local or "
                              "shared folder (the workers write the checkpoint into one directory)")
        path = str(self.storage_path if self.storage_path is not None else DEFAULT_STORAGE_PATH)
        if "://" in path:
            raise ConfigError(f"RunConfig(storage_path={path!r}): use a local or shared folder; the workers of a "
                              "group write one checkpoint directory together (object stores are not supported here)")
        self.storage_path = str(Path(path).expanduser().resolve())
        if self.name is not None:
            check_name(self.name, "RunConfig(name=...)")
        self.failure_config = self.failure_config or FailureConfig()
        self.checkpoint_config = self.checkpoint_config or CheckpointConfig()
        _check_type(self.failure_config, FailureConfig, "failure_config")
        _check_type(self.checkpoint_config, CheckpointConfig, "checkpoint_config")
        if self.stop is not None or self.callbacks:
            raise ConfigError("RunConfig(stop=..., callbacks=...) are not supported: stop inside "
                              "train_loop_per_worker (return from it) instead")


def _check_type(value: Any, kind: type, field: str) -> None:
    if not isinstance(value, kind):
        raise ConfigError(f"RunConfig({field}=...) must be a {kind.__name__} from unbroken.compat.ray_train, "
                          f"not {type(value).__name__}")


def default_name(trainer: str) -> str:
    """Ray's experiment name when none is given: the trainer's class and the start time."""
    return f"{trainer}_{dt.datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}"
