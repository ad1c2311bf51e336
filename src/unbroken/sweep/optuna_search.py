"""Optuna's samplers as a sweep searcher, through Optuna's ask/tell interface.

Optuna keeps its study in its own database, never in unbroken's index: by default the SQLite
file ``<home>/sweeps/<sweep>/optuna.db`` (``storage=`` takes any Optuna storage URL). Each
Optuna trial carries the unbroken trial number as the user attribute ``unbroken_trial``, so a
restarted driver finds the config it already asked for instead of asking again; trials that
end are told once (their state is checked first).

Adaptive samplers (TPE, CMA-ES) choose from the results told so far, so with several trials
at a time the configs depend on which trials finished first - as in Optuna itself. Random and
grid search (:mod:`.searchers`) do not.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from . import space as space_mod
from .searchers import Searcher

ATTR = "unbroken_trial"
SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp")


class OptunaSearcher(Searcher):
    """Ask/tell search with an Optuna sampler (``sampler``: one of SAMPLERS or a sampler object)."""

    name = "optuna"

    def __init__(self, sampler: Any = "tpe", seed: int | None = 0, storage: str | None = None):
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            raise ConfigError(f"unknown Optuna sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        self.sampler, self.seed, self.storage = sampler, seed, storage
        self._study = None
        self._by_number: dict[int, Any] = {}

    def bind(self, space, num_samples, metric, mode) -> None:
        super().bind(space, num_samples, metric, mode)
        if metric is None or mode not in ("min", "max"):
            raise ConfigError("search algorithm optuna needs the sweep's metric and mode (min or max)")
        self._distributions = {"/".join(p): _distribution(p, leaf) for p, leaf in space_mod.leaves(space)
                               if isinstance(leaf, space_mod.Domain)}
        self._constants = [(p, leaf) for p, leaf in space_mod.leaves(space) if not isinstance(leaf, space_mod.Domain)]

    def open(self, folder: Path, sweep: str) -> None:
        """Open (or create) the study of sweep ``sweep``, stored under ``folder`` unless a storage was given."""
        optuna = _optuna()
        folder.mkdir(parents=True, exist_ok=True)
        storage = self.storage or f"sqlite:///{folder / 'optuna.db'}"
        direction = "minimize" if self.mode == "min" else "maximize"
        self._study = optuna.create_study(study_name=sweep, storage=storage, sampler=self._make_sampler(optuna),
                                          direction=direction, load_if_exists=True)
        if self._study.direction.name.lower() != direction:
            raise ConfigError(f"the Optuna study {sweep!r} in {storage} was made to {self._study.direction.name.lower()}"
                              f", not to {direction}")
        for trial in self._study.get_trials(deepcopy=False):
            if ATTR in trial.user_attrs:
                self._by_number.setdefault(int(trial.user_attrs[ATTR]), trial)

    def _make_sampler(self, optuna):
        if not isinstance(self.sampler, str):
            return self.sampler
        makers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                  "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler,
                  "gp": optuna.samplers.GPSampler}
        return makers[self.sampler](seed=self.seed)

    def suggest(self, number: int) -> dict[str, Any]:
        if self._study is None:
            raise ConfigError("the Optuna searcher was not opened (the driver opens it)")
        known = self._by_number.get(number)
        params = known.params if known is not None else self._ask(number)
        config: dict[str, Any] = {}
        for path, value in self._constants:
            space_mod.set_path(config, path, value)
        for key, value in params.items():
            space_mod.set_path(config, tuple(key.split("/")), value)
        return config

    def _ask(self, number: int) -> dict[str, Any]:
        trial = self._study.ask(self._distributions)
        trial.set_user_attr(ATTR, number)
        self._by_number[number] = trial
        return trial.params

    def on_complete(self, number: int, result: Mapping[str, Any] | None, error: bool = False) -> None:
        optuna = _optuna()
        number_in_study = self._optuna_number(number)
        if number_in_study is None:
            return
        states = {t.number: t.state for t in self._study.get_trials(deepcopy=False)}
        if states.get(number_in_study) != optuna.trial.TrialState.RUNNING:
            return  # told already (by a driver that died before recording the end)
        value = None if result is None else result.get(self.metric)
        if error or not isinstance(value, (int, float)) or not math.isfinite(value):
            self._study.tell(number_in_study, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(number_in_study, float(value))

    def _optuna_number(self, number: int) -> int | None:
        trial = self._by_number.get(number)
        return None if trial is None else trial.number

    def describe(self) -> dict[str, Any]:
        return {"algorithm": self.name, "sampler": self.sampler if isinstance(self.sampler, str) else
                type(self.sampler).__name__, "seed": self.seed}


def _distribution(path: tuple[str, ...], leaf: space_mod.Domain):
    d = _optuna().distributions
    if isinstance(leaf, space_mod.Uniform):
        return d.FloatDistribution(leaf.low, leaf.high)
    if isinstance(leaf, space_mod.LogUniform):
        return d.FloatDistribution(leaf.low, leaf.high, log=True)
    if isinstance(leaf, space_mod.RandInt):
        return d.IntDistribution(leaf.low, leaf.high - 1)
    values = leaf.values if isinstance(leaf, space_mod.Grid) else leaf.categories
    for value in values:
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ConfigError(f"parameter {'/'.join(path)!r}: Optuna's categorical values must be None, bool, int, "
                              f"float or str, not {value!r}")
    return d.CategoricalDistribution(list(values))


def _optuna():
    try:
        import optuna  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ConfigError("search algorithm optuna needs Optuna: pip install 'unbroken[sweep]'") from None
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna
