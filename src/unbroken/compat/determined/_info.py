"""``det.get_cluster_info()``: who this trial is and where it resumes from."""

from __future__ import annotations

import dataclasses
from typing import Any

from ...envvars import LaunchEnv
from ...runtime.run import Run
from . import _env, _session


@dataclasses.dataclass(frozen=True)
class TrialInfo:
    """The trial: ``trial_id`` (unbroken's trial id, an int), ``experiment_id`` (the experiment's
    name), ``hparams``, ``trial_seed`` (derived from the trial id) and ``_config`` (the experiment
    config given to `unbroken run --config`, or {})."""

    trial_id: int
    experiment_id: str
    hparams: dict[str, Any]
    trial_seed: int
    _config: dict[str, Any]
    number: int = 1

    @property
    def user_data(self) -> dict[str, Any]:
        return self._config.get("data") or {}


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What Determined's ClusterInfo says, for a trial run by unbroken.

    ``latest_checkpoint`` is the newest good checkpoint when the run opened (the resume point;
    None on a fresh trial), fixed for the life of the process as in Determined.
    """

    trial: TrialInfo
    latest_checkpoint: str | None
    task_type: str = "TRIAL"
    master_url: str | None = None
    cluster_id: str = "unbroken"
    container_rank: int = 0
    container_addrs: tuple[str, ...] = ("127.0.0.1",)
    slot_ids: tuple[int, ...] = ()

    @property
    def task_id(self) -> str:
        return f"{self.trial.experiment_id}/{self.trial.number}"

    @property
    def allocation_id(self) -> str:
        return self.task_id


def info_of(run: Run) -> ClusterInfo:
    """The ClusterInfo of an open run."""
    i = run.info
    trial = TrialInfo(trial_id=i.trial_id, experiment_id=i.experiment, hparams=dict(i.hparams),
                      trial_seed=i.trial_id % (2**31), _config=_env.config(), number=i.trial)
    return ClusterInfo(trial=trial, latest_checkpoint=_session.launch_checkpoint())


def get_cluster_info() -> ClusterInfo | None:
    """The cluster info of this trial, or None off-cluster.

    "On the cluster" means: under `unbroken run` (the run is opened now if it is not open
    yet), or after ``core.init()``/``core_v2.init()`` opened it. A plain ``python train.py``
    gets None, as a Determined program run outside Determined does.
    """
    run = _session.current()
    if run is None and LaunchEnv.from_env().supervised:
        run = _session.open_session()
    return None if run is None else info_of(run)
