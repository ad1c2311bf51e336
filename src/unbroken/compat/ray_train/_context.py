"""``get_context()``: who this worker is (Ray Train's TrainContext), read from the worker's Run.

Ranks come from the run's torch.distributed group (``run.distributed``); the local world size and
the node rank from torchrun's environment (``LOCAL_WORLD_SIZE``, ``GROUP_RANK``). Any thread.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import ConfigError


class TrainContext:
    """The context of one worker of a ``TorchTrainer`` run."""

    def __init__(self, run: Any, environ: Any = os.environ):
        self._run = run
        self._environ = environ

    def get_world_rank(self) -> int:
        """This worker's rank among all workers (0 .. world size - 1)."""
        return self._run.distributed.rank

    def get_world_size(self) -> int:
        """How many workers run the training function."""
        return self._run.distributed.size

    def get_local_rank(self) -> int:
        """This worker's rank among the workers on its machine."""
        return self._run.distributed.local_rank

    def get_local_world_size(self) -> int:
        """How many workers run on this machine."""
        return int(self._environ.get("LOCAL_WORLD_SIZE") or self.get_world_size())

    def get_node_rank(self) -> int:
        """The rank of this worker's machine (0 on one machine)."""
        return int(self._environ.get("GROUP_RANK") or 0)

    def get_experiment_name(self) -> str:
        """``RunConfig(name=...)`` (the unbroken experiment)."""
        return self._run.info.experiment

    def get_trial_name(self) -> str:
        """The unbroken trial, as ``experiment/number``."""
        return f"{self._run.info.experiment}/{self._run.info.trial}"

    def get_trial_id(self) -> str:
        """The trial's id in the tracking index."""
        return str(self._run.info.trial_id)

    def get_trial_dir(self) -> str:
        """The trial's folder (checkpoints, logs)."""
        return str(self._run.info.trial_dir)

    def get_metadata(self) -> dict[str, Any]:
        """Ray's user metadata: always empty here."""
        return {}

    def get_storage(self) -> Any:
        raise ConfigError("get_context().get_storage() is Ray's storage internals; use get_trial_dir() or "
                          "report(checkpoint=...) instead")
