"""A Determined experiment config that asks for a search, as an unbroken sweep.

``unbroken sweep run --config exp.yaml -- python train.py`` reads the config with
:func:`load_search_config` and runs the :class:`~unbroken.sweep.spec.SweepSpec` of
:meth:`SearchPlan.sweep_spec`. The mapping:

* ``searcher.name``: ``grid`` (every point of the grid, once), ``random`` (``max_trials``
  samples), ``adaptive_asha`` (``max_trials`` samples under an ASHA scheduler), ``single`` (one
  sample); anything else (``pbt``, ``custom``, ...) is a ConfigError naming the searcher.
* ``searcher.metric`` and ``smaller_is_better`` (default true): the sweep's metric and mode.
* ``searcher.max_length`` (``N``, ``{batches: N}``, ``{epochs: N}``, ``{records: N}``): a
  trial's length in the script's units. It becomes the sweep's ``stop: {training_iteration:
  N}``; the trial's ``searcher.operations()`` yields one operation of the length of its segment
  (an ASHA rung's budget, else ``N``), and the sweep's iteration of a trial is that length.
* ``adaptive_asha``: ``max_rungs`` (5), ``divisor`` (4) and ``max_trials`` give Determined's
  number of rungs ``R``; the scheduler is ASHA with ``max_t = N``, ``grace_period = N /
  divisor**(R-1)``, ``reduction_factor = divisor``, one bracket (Determined's ``mode:
  aggressive``; ``standard`` and ``conservative`` run several brackets there, here the same one
  bracket, with a note).
* ``max_concurrent_trials``: the sweep's ``max_concurrent`` (0: every trial at once; absent: 1,
  as unbroken sweeps on one machine; ``--max-concurrent`` overrides).
* ``hyperparameters`` (nested dicts allowed): ``const`` (and plain values) stay constants;
  ``categorical`` is a choice (grid: every value); ``int`` an integer in ``[minval, maxval)``,
  ``double`` a float in ``[minval, maxval)``, ``log`` ``base ** x`` for ``x`` in ``[minval,
  maxval)`` (base 10 when not given); under ``grid`` these need ``count`` and take
  Determined's evenly spaced points.
* ``reproducibility.experiment_seed``: the search seed (default 0, so a resumed sweep draws the
  same configs); ``max_restarts``, ``checkpoint_storage``, ``entrypoint`` and ``name`` as for
  ``unbroken run --config`` (:mod:`.expconf`).

Pure: reads the file, builds objects, raises ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

from ...errors import ConfigError
from ...sweep import space as space_mod
from . import _env
from .expconf import ExperimentPlan, experiment_plan, max_length_of, read_config

SEARCHERS = ("single", "grid", "random", "adaptive_asha")
HP_TYPES = ("const", "categorical", "int", "double", "log")
ASHA_DEFAULTS = {"max_rungs": 5, "divisor": 4, "mode": "standard"}
ASHA_MODES = ("aggressive", "standard", "conservative")


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """What a Determined search asks of an unbroken sweep (see the module docstring)."""

    experiment: ExperimentPlan
    space: dict[str, Any]
    search: dict[str, Any]
    num_samples: int
    max_concurrent: int | None
    metric: str
    mode: str
    max_length: int
    scheduler: dict[str, Any] | None
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.experiment.name

    def sweep_spec(self, command: list[str] | None = None, *, name: str | None = None,
                   max_concurrent: int | None = None):
        """The SweepSpec running ``command`` (else the config's ``entrypoint``) for each trial.

        ConfigError when there is no command, or the entrypoint is a Trial class.
        """
        from ...sweep.spec import SweepSpec  # noqa: PLC0415 - the sweep layer only when a sweep runs

        concurrent = max_concurrent or self.max_concurrent or 1
        return SweepSpec(name=name or self.name, space=self.space, command=self._command(command),
                         search=self.search, num_samples=self.num_samples, max_concurrent=concurrent,
                         metric=self.metric, mode=self.mode, stop={"training_iteration": self.max_length},
                         scheduler=self.scheduler, max_failures=self.experiment.max_restarts)

    def _command(self, command: list[str] | None) -> list[str]:
        if command:
            return list(command)
        entry = self.experiment.entrypoint
        if not entry:
            raise ConfigError("the experiment config has no entrypoint: give the trial's command after --, e.g. "
                              "`unbroken sweep run --config exp.yaml -- python train.py`")
        if len(entry) == 1 and ":" in entry[0]:
            raise ConfigError(f"entrypoint {entry[0]!r} is a Trial class, which unbroken does not run: give a "
                              "core-API script's command after --, e.g. `-- python train.py`")
        return list(entry)

    def trial_env(self) -> dict[str, str]:
        """Variables every trial inherits: the config (``info.trial._config``) and the object store's keys."""
        config = {k: v for k, v in self.experiment.config.items() if k != "checkpoint_storage"}
        return {**_env.encode(config=config), **self.experiment.storage_env}


def load_search_config(source: str | Path | Mapping[str, Any]) -> SearchPlan:
    """The plan of a config file (``.yaml``/``.yml``/``.json``) or mapping; ConfigError names what is wrong."""
    config = read_config(source)
    searcher = config.get("searcher")
    if not isinstance(searcher, Mapping):
        raise ConfigError("the experiment config needs a searcher: searcher: {name: random, metric: loss, "
                          "max_trials: 8, max_length: {batches: 100}}")
    kind = _searcher_name(searcher)
    _refuse_unsupported_fields(searcher)
    length = _env.check_length(max_length_of(searcher), "searcher.max_length")
    metric = searcher.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"searcher.metric must name the validation metric to optimize, not {metric!r}")
    smaller = searcher.get("smaller_is_better", True)
    if not isinstance(smaller, bool):
        raise ConfigError(f"searcher.smaller_is_better must be true or false, not {smaller!r}")
    space = search_space(config.get("hyperparameters"), grid=kind == "grid")
    trials = 1 if kind in ("grid", "single") else _count(searcher, "max_trials", 1, required=True)
    scheduler, notes = asha_scheduler(searcher, length, trials) if kind == "adaptive_asha" else (None, ())
    return SearchPlan(experiment=experiment_plan(config, {}, None), space=space,
                      search={"algorithm": "grid" if kind == "grid" else "random", "seed": _seed(config)},
                      num_samples=trials, max_concurrent=_concurrency(searcher, space_mod.grid_size(space) * trials),
                      metric=metric,
                      mode="min" if smaller else "max", max_length=length, scheduler=scheduler, notes=notes)


# -- the searcher -------------------------------------------------------------------------------
def _searcher_name(searcher: Mapping[str, Any]) -> str:
    kind = searcher.get("name")
    if kind in SEARCHERS:
        return kind
    if kind in ("pbt", "custom"):
        raise ConfigError(f"searcher.name {kind!r} is not supported by `unbroken sweep run --config`: use "
                          f"{', '.join(SEARCHERS)}, or write an unbroken sweep file (its pbt scheduler, or a "
                          "Python searcher)")
    raise ConfigError(f"searcher.name {kind!r} is not supported: use one of {', '.join(SEARCHERS)}")


def _refuse_unsupported_fields(searcher: Mapping[str, Any]) -> None:
    for field in ("source_trial_id", "source_checkpoint_uuid"):
        if searcher.get(field) is not None:
            raise ConfigError(f"searcher.{field} (start every trial from a checkpoint) is not supported: remove it")
    for field in ("max_time", "time_metric"):
        if searcher.get(field) is not None:
            raise ConfigError(f"searcher.{field} is not supported: give searcher.max_length, and train to "
                              "each searcher operation's length (core.searcher.operations())")


def _count(searcher: Mapping[str, Any], field: str, least: int, *, required: bool = False,
           default: Any = None) -> Any:
    value = searcher.get(field)
    if value is None:
        if required:
            raise ConfigError(f"searcher.{field} is required for searcher {searcher.get('name')!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"searcher.{field} must be a whole number >= {least}, not {value!r}")
    return value


def _concurrency(searcher: Mapping[str, Any], total: int) -> int | None:
    """``max_concurrent_trials``: None when absent (the sweep's default, 1); 0: all ``total`` trials at once."""
    value = _count(searcher, "max_concurrent_trials", 0)
    return total if value == 0 else value


def _seed(config: Mapping[str, Any]) -> int:
    seed = (config.get("reproducibility") or {}).get("experiment_seed")
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"reproducibility.experiment_seed must be a whole number >= 0, not {seed!r}")
    return seed


def asha_scheduler(searcher: Mapping[str, Any], max_length: int, max_trials: int) -> tuple[dict[str, Any], tuple]:
    """The ASHA scheduler of an ``adaptive_asha`` searcher, and notes on what differs from Determined."""
    max_rungs = _count(searcher, "max_rungs", 1, default=ASHA_DEFAULTS["max_rungs"])
    divisor = searcher.get("divisor", ASHA_DEFAULTS["divisor"])
    if divisor is None:
        divisor = ASHA_DEFAULTS["divisor"]
    if isinstance(divisor, bool) or not isinstance(divisor, (int, float)) or not divisor > 1:
        raise ConfigError(f"searcher.divisor must be a number > 1, not {divisor!r}")
    mode = searcher.get("mode") or ASHA_DEFAULTS["mode"]
    if mode not in ASHA_MODES:
        raise ConfigError(f"searcher.mode must be one of {', '.join(ASHA_MODES)}, not {mode!r}")
    rungs = asha_rungs(max_rungs, divisor, max_length, max_trials)
    notes = []
    brackets = searcher.get("bracket_rungs") or []
    if brackets:
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in brackets):
            raise ConfigError(f"searcher.bracket_rungs must be a list of whole numbers >= 1, not {brackets!r}")
        rungs = max(brackets)
        if len(brackets) > 1:
            notes.append(f"searcher.bracket_rungs {list(brackets)}: unbroken runs one bracket, of {rungs} rungs")
    elif mode != "aggressive":
        notes.append(f"adaptive_asha mode {mode!r} runs several brackets in Determined; unbroken runs one bracket "
                     f"of {rungs} rungs (as mode 'aggressive')")
    grace = max(1, int(round(max_length / divisor ** (rungs - 1))))
    return ({"type": "asha", "max_t": max_length, "grace_period": min(grace, max_length),
             "reduction_factor": divisor}, tuple(notes))


def asha_rungs(max_rungs: int, divisor: float, max_length: int, max_trials: int) -> int:
    """How many rungs Determined gives a bracket: ``max_rungs``, fewer when ``max_length`` or
    ``max_trials`` cannot fill them (each rung ``divisor`` times the one below)."""
    by_length = int(math.log(max_length) / math.log(divisor)) + 1
    by_trials = int(math.log(max_trials) / math.log(divisor)) + 1
    return max(1, min(max_rungs, by_length, by_trials))


# -- the hyperparameters ------------------------------------------------------------------------
def search_space(hyperparameters: Any, *, grid: bool) -> dict[str, Any]:
    """An unbroken space (domains and constants, nested) of Determined ``hyperparameters``.

    ``grid``: int/double/log need ``count`` and become grid values; categorical values become
    a grid. Otherwise they are sampled. ConfigError names the hyperparameter.
    """
    if hyperparameters is None or hyperparameters == {}:
        raise ConfigError("the experiment config has no hyperparameters to search: add some under "
                          "hyperparameters (e.g. lr: {type: log, base: 10, minval: -4, maxval: -1})")
    if not isinstance(hyperparameters, Mapping):
        raise ConfigError(f"hyperparameters must be a mapping, not {type(hyperparameters).__name__}")
    return _group(hyperparameters, "", grid)


def _group(group: Mapping[str, Any], prefix: str, grid: bool) -> dict[str, Any]:
    out = {}
    for key, value in group.items():
        where = f"{prefix}{key}"
        if isinstance(value, Mapping) and "type" in value:
            out[str(key)] = _domain(value, where, grid)
        elif isinstance(value, Mapping) and value:
            out[str(key)] = _group(value, f"{where}.", grid)
        else:
            out[str(key)] = _constant(value)
    return out


def _constant(value: Any) -> Any:
    # a mapping would be read as a domain or a group by the sweep's space: a one-value grid keeps it whole
    return space_mod.Grid((value,)) if isinstance(value, Mapping) else value


def _domain(spec: Mapping[str, Any], where: str, grid: bool) -> Any:
    kind = spec.get("type")
    if kind == "const":
        return _constant(_field(spec, "val", where))
    if kind == "categorical":
        vals = _field(spec, "vals", where)
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"hyperparameters.{where}.vals must be a non-empty list, not {vals!r}")
        return space_mod.Grid(tuple(vals)) if grid else space_mod.Choice(tuple(vals))
    if kind not in HP_TYPES:
        raise ConfigError(f"hyperparameters.{where} has an unsupported type {kind!r}: use one of {', '.join(HP_TYPES)} "
                          "(or a nested mapping of them)")
    low, high = (_number(spec, f, where, whole=kind == "int") for f in ("minval", "maxval"))
    if not low < high:
        raise ConfigError(f"hyperparameters.{where} needs minval < maxval, not {low!r} and {high!r}")
    base = _base(spec, where) if kind == "log" else None
    if grid:
        return space_mod.Grid(grid_values(kind, low, high, _grid_count(spec, where), base))
    if kind == "int":
        return space_mod.RandInt(low, high)
    if kind == "double":
        return space_mod.Uniform(float(low), float(high))
    return space_mod.LogUniform(*sorted((base ** low, base ** high)))


def grid_values(kind: str, low: float, high: float, count: int, base: float | None = None) -> tuple:
    """Determined's ``count`` evenly spaced grid points of an int/double/log hyperparameter (both
    ends included; one point: the middle; ints: at most every integer of the range)."""
    if kind == "int":
        count = min(count, int(high - low + 1))
    points = [(low + high) / 2] if count == 1 else [low + i * (high - low) / (count - 1) for i in range(count)]
    if kind == "int":
        return tuple(_round_half_away(p) for p in points)
    if kind == "log":
        return tuple(base ** p for p in points)
    return tuple(float(p) for p in points)


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _grid_count(spec: Mapping[str, Any], where: str) -> int:
    count = spec.get("count")
    if count is None:
        raise ConfigError(f"hyperparameters.{where}: grid search needs a count (how many values of "
                          f"{spec.get('type')} {where} to try), e.g. count: 3")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"hyperparameters.{where}.count must be a whole number >= 1, not {count!r}")
    return count


def _number(spec: Mapping[str, Any], field: str, where: str, *, whole: bool) -> float:
    value = _field(spec, field, where)
    ok = isinstance(value, int) if whole else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not ok:
        kind = "a whole number" if whole else "a finite number"
        raise ConfigError(f"hyperparameters.{where}.{field} must be {kind}, not {value!r}")
    return value


def _base(spec: Mapping[str, Any], where: str) -> float:
    base = spec.get("base", 10)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0 or base == 1:
        raise ConfigError(f"hyperparameters.{where}.base must be a number > 0 other than 1, not {base!r}")
    return float(base)


def _field(spec: Mapping[str, Any], field: str, where: str) -> Any:
    if field not in spec:
        raise ConfigError(f"hyperparameters.{where} (type {spec.get('type')}) needs {field!r}")
    return spec[field]
