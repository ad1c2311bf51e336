"""``unbroken.init()``: join the trial, become its writer, and compose the Run."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

from .._proc import ProcessIdentity
from ..checkpoint import RetentionPolicy, keep_latest
from ..checkpoint.store.trialstore import location_of, trial_store
from ..config import check_name, resolve_home, resolve_storage_root
from ..envvars import LaunchEnv
from ..errors import ConfigError
from ..paths import TrialPaths
from ..storage.locks import WriterLease
from ..tracking import Tracker, join_trial, resolve_db_url
from .checkpointing import CheckpointContext
from .distributed import detect
from .groupinit import follow, lead, make_loop
from .index import RunIndex
from .metrics import MetricsWriter
from .policy import SavePolicy, every_seconds
from .preempt import PreemptContext
from .run import Run, RunInfo
from .training import TrainContext

log = logging.getLogger("unbroken")

DEFAULT_SAVE_POLICY = every_seconds(600)
DEFAULT_RETENTION = keep_latest(3)


def init(name: str | None = None, *, hparams: dict[str, Any] | None = None, home: str | os.PathLike | None = None,
         fresh: bool = False, save: SavePolicy | None = None, keep: RetentionPolicy | None = None,
         preempt_signals: list[str | int] | None = None, deadline: float | None = None,
         exit_on_preempt: bool = True, wait_for_trial: float | None = 0,
         storage: str | os.PathLike | None = None, db: str | os.PathLike | None = None,
         incremental: bool | None = None) -> Run:
    """Join (or create) the trial of experiment ``name`` and record this process as an attempt.

    * ``name``: the experiment. Rerunning with the same name resumes its newest trial;
      ``fresh=True`` starts a new trial. Under ``unbroken run`` the process joins the
      supervisor's trial whatever ``name`` says (a different name is logged once).
    * ``hparams``: JSON-able hyperparameters, fixed per trial (a rerun with other values is an
      error unless ``fresh=True``). ``run.hparams`` gives them back.
    * ``home``: where checkpoints and the index live (default ``$UNBROKEN_HOME`` or ~/.unbroken).
    * ``storage``: where new trials keep their checkpoints instead: a folder or an object-store
      URL such as ``s3://bucket/prefix`` (default ``$UNBROKEN_STORAGE``, else the home). A
      trial keeps the storage it was created with; a rerun finds it there.
    * ``db``: the tracking index: a PostgreSQL URL or a SQLite file (default ``$UNBROKEN_DB``,
      else ``unbroken.db`` in the home). A corrupt SQLite file is moved aside and rebuilt.
    * ``save``: when ``run.steps()`` checkpoints (default every 10 minutes;
      ``unbroken.auto_interval()`` chooses it from the measured save cost and this trial's failure
      history); ``keep``: retention (default the latest 3).
    * ``incremental``: asynchronous saves write only the tensors that changed since the previous
      checkpoint and refer to the earlier files for the rest (default ``$UNBROKEN_INCREMENTAL``, else off).
    * ``preempt_signals``: signals that request a stop (default TERM, INT and the supervisor's
      signal or USR2), handled from the first ``should_preempt()``/``steps()`` on;
      ``deadline``: a Unix time at which to stop.
    * ``exit_on_preempt``: leaving the ``with`` block after a stop raises
      ``SystemExit(75)`` (EXIT_PREEMPTED) so a supervisor can tell it from a crash.
    * ``wait_for_trial``: a trial has one writer at a time. If another live process writes it,
      raise :class:`~unbroken.errors.TrialBusy` naming it (0, the default), wait up to this many
      seconds, or without limit (None). A writer that died releases the trial at once.
    """
    _default_logging()
    group = detect()
    if not group.is_chief:
        return follow(group, keep or DEFAULT_RETENTION, save or DEFAULT_SAVE_POLICY, preempt_signals, deadline,
                      exit_on_preempt)
    with lead(group) as share:
        return share(_init_chief(group, name, hparams, home, fresh, save, keep, preempt_signals, deadline,
                                 exit_on_preempt, wait_for_trial, storage, db, incremental))


def _init_chief(group, name, hparams, home, fresh, save, keep, preempt_signals, deadline, exit_on_preempt,
                wait_for_trial, storage, db, incremental) -> Run:
    """Rank 0 (or the one process): join the trial, take the lease, record the attempt, compose the Run."""
    launch = LaunchEnv.from_env()
    home_path = launch.home if launch.supervised and launch.home else resolve_home(home)
    experiment = _experiment_name(name, launch)
    storage_root = launch.storage if launch.supervised else resolve_storage_root(storage)
    db_url = launch.db if launch.supervised and launch.db else resolve_db_url(db, home_path)
    tracker = Tracker.open_or_rebuild(db_url)
    with _closing_on_error(tracker.close):
        trial = join_trial(tracker, experiment, hparams=hparams, fresh=fresh and not launch.supervised,
                           number=launch.trial if launch.supervised else None,
                           storage_of=location_of(home_path, experiment, storage_root))
        paths = TrialPaths(home_path, experiment, trial.number)
        lease = WriterLease(paths.writer_lock, f"trial {trial.ref}")
        if not launch.supervised:
            lease.acquire(wait=wait_for_trial)
        with _closing_on_error(lease.release):
            store = trial_store(home_path, trial, storage_root)
            return _compose(tracker, trial, paths, store, launch, lease, save, keep, preempt_signals, deadline,
                            exit_on_preempt, incremental, group)


def _compose(tracker, trial, paths, store, launch, lease, save, keep, preempt_signals, deadline,
             exit_on_preempt, incremental, group) -> Run:
    me = ProcessIdentity.current()
    if launch.supervised:
        attempt = tracker.attempt(launch.attempt_id)
        tracker.update_attempt(attempt.id, pid=me.pid, pid_start=me.start_time)
    else:
        tracker.close_lost_attempts(trial.id)
        attempt = tracker.start_attempt(trial.id, pid=me.pid, pid_start=me.start_time)
    store.clean_stale()
    info = RunInfo(trial.experiment, trial.number, trial.id, attempt.id, attempt.number, trial.hparams,
                   paths.home, paths.root, launch.supervised)
    label = f"trial {trial.ref}"
    index = RunIndex(tracker, trial.id, attempt.id, supervised=launch.supervised)
    index.reconcile(store.list())  # the index drifts (kills, gc, other writers); storage is the truth
    preempt = PreemptContext(preempt_signals, deadline if deadline is not None else launch.deadline,
                             extra_signal=launch.preempt_signal)
    checkpoint = CheckpointContext(store, index, keep or DEFAULT_RETENTION, label=label, group=group)
    writer = MetricsWriter(tracker, trial.id, attempt.id)
    loop = make_loop(group, checkpoint, TrainContext(writer), preempt, save or DEFAULT_SAVE_POLICY, label=label,
                     incremental=incremental)
    loop.observe_history(_history(tracker.attempts(trial.id), attempt.id), _last_stall(tracker, trial.id, loop))
    return Run(info, checkpoint=checkpoint, preempt=loop.preempt, writer=writer, index=index, loop=loop,
               release=lease.release, exit_on_preempt=exit_on_preempt, distributed=group)


def _history(attempts, current_id: int) -> list[tuple[float, bool]]:
    """Earlier attempts of the trial as ``(seconds they ran, ended by a failure)``."""
    return [(max(0.0, (a.ended_at or a.started_at) - a.started_at), a.end_reason in ("crashed", "lost"))
            for a in attempts if a.id != current_id and a.ended_at is not None]


def _last_stall(tracker, trial_id: int, loop) -> float | None:
    """The stall of the last save this trial recorded (an earlier attempt's), for a self-tuning
    interval: it then starts from a measured cost instead of its hint. None without one."""
    if not loop.self_tuning:
        return None
    _steps, value = tracker.latest_metrics(trial_id).get("checkpoint", {}).get("stall_s", (0, None))
    return float(value) if isinstance(value, (int, float)) else None


def _experiment_name(name: str | None, launch: LaunchEnv) -> str:
    if launch.supervised and launch.experiment:
        if name is not None and name != launch.experiment:
            log.warning("unbroken: init(name=%r) runs under `unbroken run`, so it joins the supervisor's trial "
                        "%s/%s (pass --name %s to `unbroken run` to name it so)", name, launch.experiment,
                        launch.trial, name)
        return launch.experiment
    if name is None and launch.experiment:
        return check_name(launch.experiment)
    if name is None:
        raise ConfigError("unbroken.init() needs a name: init(name='my-experiment'), or run under `unbroken run`")
    return check_name(name)


@contextlib.contextmanager
def _closing_on_error(cleanup):
    try:
        yield
    except BaseException:
        cleanup()
        raise


def _default_logging() -> None:
    """Show unbroken's INFO messages on stderr unless the application configured logging."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
