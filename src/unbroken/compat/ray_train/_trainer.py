"""``DataParallelTrainer``: ``fit()``, ``restore()`` and ``can_restore()`` without Ray.

``fit()`` runs in the driver process: it writes the trainer's state file into the experiment
folder ``storage_path/name`` (which is also the run's unbroken home), starts ``unbroken run`` for
``num_workers`` workers (one torch.distributed group, restarted as a whole after a failure, at
most ``max_failures`` times) and waits; then it reads the :class:`~._result.Result` from the
folder. A new trainer starts a new trial; a restored one (``restore(path)``) resumes the newest
trial of the folder from its newest verified checkpoint (a completed one is not run again: its
Result is returned). Blocks for the whole run; main thread.

Raises ConfigError for bad arguments (before anything starts), TrainingFailedError when the
workers failed beyond the budget, ``SystemExit(75)`` when the run was stopped (SIGTERM,
SIGINT, SIGHUP, a time limit) after saving, KeyboardInterrupt after a second Ctrl-C: run the
driver again to resume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from ...config import EXIT_PREEMPTED
from ...launch.decide import EXIT_CANCELLED
from ...errors import ConfigError, UnbrokenError
from ...sweep import loader
from ._config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, default_name
from ._launch import run_supervisor, supervisor_argv, supervisor_env
from ._result import Result, TrainingFailedError, failure_message, read_result
from ._state import TrainerState, config_json, has_state, read_state, write_state
from ._stored import read_trial

_UNSUPPORTED = ("datasets", "resume_from_checkpoint", "dataset_config", "metadata")


class DataParallelTrainer:
    """Runs ``train_loop_per_worker(train_loop_config)`` on ``scaling_config.num_workers`` workers."""

    def __init__(self, train_loop_per_worker: Callable[..., Any] | str, *, train_loop_config: dict | None = None,
                 scaling_config: ScalingConfig | None = None, run_config: RunConfig | None = None,
                 **unsupported: Any):
        for key, value in unsupported.items():
            if key == "torch_config" or value is None:
                continue
            what = "is not supported" if key in _UNSUPPORTED else "is not an argument of TorchTrainer"
            raise ConfigError(f"TorchTrainer({key}=...) {what}: load data inside train_loop_per_worker")
        if not callable(train_loop_per_worker) and not isinstance(train_loop_per_worker, str):
            raise ConfigError(f"train_loop_per_worker must be a function, not {type(train_loop_per_worker).__name__}")
        self._train_loop = loader.reference_of(train_loop_per_worker)
        self._config = config_json(train_loop_config)
        self.scaling_config = _typed(scaling_config or ScalingConfig(), ScalingConfig, "scaling_config")
        self.run_config = _typed(run_config or RunConfig(), RunConfig, "run_config")
        self._name = self.run_config.name or default_name(type(self).__name__)
        self._folder = Path(self.run_config.storage_path) / self._name
        self._restored = False

    def fit(self) -> Result:
        """Run the workers until they complete; see the module docstring."""
        if loader.importing_for_trial():
            raise loader.ImportStop()  # a worker imports the driver script: stop before the script's fit()
        if self._restored and _completed(self._folder, self._name):
            return read_result(self._folder, self._name)  # as Ray: a finished run is not run again
        write_state(self._folder, self._state())
        scaling, failures = self.scaling_config, self.run_config.failure_config
        argv = supervisor_argv(self._folder, self._name, scaling.num_workers, failures.max_failures,
                               fresh=not self._restored)
        code = run_supervisor(argv, supervisor_env(self._folder))
        if code == 0:
            return read_result(self._folder, self._name)
        if code == EXIT_CANCELLED:
            raise KeyboardInterrupt(f"{self._name} cancelled (a second Ctrl-C); run again to resume")
        if code == EXIT_PREEMPTED:
            print(f"unbroken: {self._name} stopped after saving; run again to resume from {self._folder}",
                  file=sys.stderr, flush=True)
            raise SystemExit(EXIT_PREEMPTED)
        raise TrainingFailedError(failure_message(self._folder, self._name, code))

    @classmethod
    def restore(cls, path: str | Path, train_loop_per_worker: Callable[..., Any] | None = None,
                train_loop_config: dict | None = None, **kwargs: Any) -> "DataParallelTrainer":
        """A trainer that resumes the experiment in ``path`` (``storage_path/name``) where it stopped.

        ``train_loop_per_worker``/``train_loop_config`` replace the saved ones when given;
        ``scaling_config`` may be given too. ConfigError when ``path`` holds no experiment.
        """
        folder = Path(path).expanduser().resolve()
        state = read_state(folder)
        scaling = kwargs.pop("scaling_config", None) or ScalingConfig(num_workers=state.num_workers,
                                                                      use_gpu=state.use_gpu)
        run_config = RunConfig(name=state.name, storage_path=str(folder.parent),
                               failure_config=FailureConfig(max_failures=state.max_failures),
                               checkpoint_config=CheckpointConfig(state.num_to_keep, state.score_attribute,
                                                                  state.score_order))
        trainer = cls(train_loop_per_worker or state.train_loop,
                      train_loop_config=state.train_loop_config if train_loop_config is None else train_loop_config,
                      scaling_config=scaling, run_config=run_config, **kwargs)
        trainer._folder, trainer._restored = folder, True
        return trainer

    @classmethod
    def can_restore(cls, path: str | Path) -> bool:
        """True when ``path`` holds an experiment started by ``fit()`` (its state file)."""
        return has_state(Path(path).expanduser())

    def _state(self) -> TrainerState:
        checkpoints = self.run_config.checkpoint_config
        return TrainerState(name=self._name, train_loop=self._train_loop, train_loop_config=self._config,
                            num_workers=self.scaling_config.num_workers, use_gpu=self.scaling_config.use_gpu,
                            max_failures=self.run_config.failure_config.max_failures,
                            num_to_keep=checkpoints.num_to_keep, score_attribute=checkpoints.checkpoint_score_attribute,
                            score_order=checkpoints.checkpoint_score_order)


def _completed(folder: Path, name: str) -> bool:
    """True when the newest trial of ``name`` in ``folder`` completed."""
    try:
        return read_trial(folder, name).status == "completed"
    except UnbrokenError:
        return False


def _typed(value: Any, kind: type, field: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"TorchTrainer({field}=...) must be a {kind.__name__} from unbroken.compat.ray_train, "
                          f"not {type(value).__name__}")
    return value
