"""``tune.run``: a Tune experiment as an unbroken sweep (see :mod:`unbroken.tune`)."""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..config import resolve_home
from ..config import EXIT_PREEMPTED
from ..errors import ConfigError, LaunchError, NotFound
from ..sweep import loader
from ..sweep.driver import Driver, SweepStopped
from ..sweep.results import SweepAnalysis
from ..sweep.spec import SweepSpec
from ..sweep.state import SweepStore
from ..tracking import resolve_db_url


def run(run_or_experiment: Any, *, name: str | None = None, config: Mapping[str, Any] | None = None,
        num_samples: int = 1, stop: Mapping[str, Any] | None = None, scheduler: Any = None, search_alg: Any = None,
        metric: str | None = None, mode: str | None = None, checkpoint_freq: int = 0, checkpoint_at_end: bool = False,
        max_failures: int = 0, local_dir: str | None = None, storage_path: str | None = None,
        resume: bool | str = False, max_concurrent_trials: int | None = None, keep_checkpoints_num: int | None = None,
        raise_on_failed_trial: bool = True, executor: Any = None, verbose: Any = None,
        resources_per_trial: Any = None, **ignored: Any) -> SweepAnalysis:
    """Run ``run_or_experiment`` (a Trainable class or a function) over ``config``; see Ray Tune's ``tune.run``.

    ``local_dir``/``storage_path`` is the unbroken home (default ``$UNBROKEN_HOME`` or ~/.unbroken);
    ``name`` the sweep and experiment (default: the trainable's name). ``resume=True`` (or
    ``"AUTO"``) continues a sweep of that name, and starts it if there is none; with
    ``resume=False`` an existing sweep of that name is an error. ``executor``: ``"local"``
    (default), ``"slurm"`` or ``"ray"``, or a mapping with options. A stop signal makes the trials
    save and the program exit with status 75; run it again with ``resume=True`` to continue.
    """
    if loader.importing_for_trial():
        raise loader.ImportStop()  # a trial process is importing this program for its trainable
    if stop is not None and not isinstance(stop, Mapping):
        raise ConfigError("tune.run: stop must be a dict such as {'training_iteration': 10} (functions are not "
                          "supported: trials stop in their own processes)")
    home = resolve_home(storage_path or local_dir)
    sweep_name = name or _default_name(run_or_experiment)
    spec = SweepSpec(name=sweep_name, space=dict(config or {}), trainable=run_or_experiment, search=search_alg,
                     num_samples=num_samples, max_concurrent=max_concurrent_trials or 1, metric=metric, mode=mode,
                     stop=stop, scheduler=scheduler, max_failures=max_failures, checkpoint_freq=checkpoint_freq,
                     checkpoint_at_end=checkpoint_at_end, keep_checkpoints=keep_checkpoints_num or 2,
                     executor=executor, restart_backoff=float(ignored.pop("restart_backoff", 1.0)))
    if not resume and _exists(home, sweep_name):
        raise ConfigError(f"a sweep named {sweep_name!r} exists in {home}: pass resume=True to continue it, or "
                          "another name")
    try:
        analysis = Driver(spec, home=home).run()
    except SweepStopped as exc:
        raise SystemExit(EXIT_PREEMPTED) from exc
    failed = [t.ref for t in analysis.trials if t.state == "error"]
    if failed and raise_on_failed_trial:
        raise LaunchError(f"trials did not complete: {', '.join(failed)} (see `unbroken show TRIAL`)")
    return analysis


def _default_name(trainable: Any) -> str:
    base = getattr(trainable, "__name__", None) or str(trainable).rpartition(":")[2] or "tune"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._") or "tune"


def _exists(home, name: str) -> bool:
    db = resolve_db_url(None, home)
    try:
        store = SweepStore(db, readonly=True)
    except NotFound:
        return False
    try:
        return name in store.sweep_names()
    finally:
        store.close()
