"""Population Based Training, in synchronous generations.

Every ``perturbation_interval`` iterations each trial pauses (saving a checkpoint). When the
whole population reached the boundary, the trials are ranked by the metric there; each trial
in the bottom ``quantile_fraction`` *exploits* one of the top ``quantile_fraction`` (chosen at
random): it continues from a copy of that trial's checkpoint, with the donor's config
*explored* (each mutated hyperparameter resampled with ``resample_probability``, else a number
multiplied by one of ``perturbation_factors``, or a list value moved to a neighbour).

Ray Tune's PBT is asynchronous by default (``synch=False``); this one always waits for the
generation, and draws its random choices from a generator seeded with (seed, iteration, trial),
so a sweep killed and resumed makes exactly the choices of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping

import numpy as np

from ...errors import ConfigError
from .. import space as space_mod
from .base import WAIT, Decision, Scheduler, TrialView, go_on, positive_int


class PopulationBasedTraining(Scheduler):
    """See the module docstring. ``hyperparam_mutations``: {key: list | domain | callable | nested dict}."""

    name = "pbt"
    needs_checkpoints = True

    def __init__(self, time_attr: str = "training_iteration", metric: str | None = None, mode: str | None = None,
                 perturbation_interval: int = 1, burn_in_period: int = 0,
                 hyperparam_mutations: Mapping[str, Any] | None = None, quantile_fraction: float = 0.25,
                 resample_probability: float = 0.25, perturbation_factors: tuple[float, float] = (1.2, 0.8),
                 custom_explore_fn: Callable[[dict], dict] | None = None, seed: int = 0, synch: bool = True,
                 log_config: bool = True, require_attrs: bool = True):
        super().__init__(metric, mode, time_attr)
        self.interval = positive_int(int(perturbation_interval) if isinstance(perturbation_interval, float)
                                     and perturbation_interval.is_integer() else perturbation_interval,
                                     "pbt perturbation_interval")
        self.burn_in = int(burn_in_period)
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ConfigError("pbt needs hyperparam_mutations (what to perturb) or a custom_explore_fn")
        self.mutations = _parse_mutations(hyperparam_mutations or {})
        if not 0 <= quantile_fraction <= 0.5:
            raise ConfigError(f"pbt quantile_fraction must be in [0, 0.5], not {quantile_fraction!r}")
        if not 0 <= resample_probability <= 1:
            raise ConfigError(f"pbt resample_probability must be in [0, 1], not {resample_probability!r}")
        self.quantile, self.resample, self.factors = quantile_fraction, resample_probability, tuple(perturbation_factors)
        self.custom_explore_fn, self.seed = custom_explore_fn, seed

    def uses_metric(self) -> bool:
        return True

    def first_stop(self, number: int) -> int:
        return self.interval

    def decide(self, number: int, trials: Mapping[int, TrialView]) -> Decision:
        me = trials[number]
        t = me.iteration
        if t not in me.results:
            return go_on(self._next(t))
        population = [trials.get(n) for n in range(1, self.total + 1)]
        if any(p is None or (t not in p.results and not p.ended()) for p in population):
            return WAIT
        ranked = self.ranked([p for p in population if p is not None], t)
        q = min(int(math.ceil(len(ranked) * self.quantile)), len(ranked) // 2)
        if q == 0 or t < self.burn_in or number not in [v.number for v in ranked[len(ranked) - q:]]:
            return go_on(self._next(t))
        rng = np.random.default_rng([self.seed, t, number])
        donor = ranked[int(rng.integers(q))]
        config = self.explore(donor.config, rng)
        return go_on(self._next(t), config=config, exploit={"donor": donor.number, "iteration": t},
                     reason=f"exploits trial {donor.number} at iteration {t}")

    def _next(self, t: int) -> int:
        return (t // self.interval + 1) * self.interval

    def explore(self, config: Mapping[str, Any], rng) -> dict[str, Any]:
        """A perturbed copy of ``config`` (see the module docstring)."""
        new = _explore(copy.deepcopy(dict(config)), self.mutations, rng, self.resample, self.factors)
        return self.custom_explore_fn(new) if self.custom_explore_fn is not None else new

    def describe(self):
        return {"type": self.name, "perturbation_interval": self.interval, "burn_in_period": self.burn_in,
                "hyperparam_mutations": _describe(self.mutations), "quantile_fraction": self.quantile,
                "resample_probability": self.resample, "seed": self.seed, "metric": self.metric, "mode": self.mode}


def _parse_mutations(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, spec in raw.items():
        if isinstance(spec, (list, tuple)):
            if not spec:
                raise ConfigError(f"pbt hyperparam_mutations[{key!r}] is an empty list")
            out[key] = list(spec)
        elif space_mod.is_domain_form(spec):
            out[key] = space_mod.parse_value(spec, (key,))
        elif isinstance(spec, Mapping):
            out[key] = _parse_mutations(spec)
        elif isinstance(spec, space_mod.Domain) or callable(spec):
            out[key] = spec
        else:
            raise ConfigError(f"pbt hyperparam_mutations[{key!r}] must be a list, a domain or a function, not {spec!r}")
    return out


def _explore(config: dict, mutations: Mapping[str, Any], rng, resample: float, factors) -> dict:
    for key, spec in mutations.items():
        if isinstance(spec, dict):
            config[key] = _explore(dict(config.get(key) or {}), spec, rng, resample, factors)
            continue
        current = config.get(key)
        if isinstance(spec, list):
            if rng.random() < resample or current not in spec:
                config[key] = spec[int(rng.integers(len(spec)))]
            else:
                index = spec.index(current) + (1 if rng.random() < 0.5 else -1)
                config[key] = spec[min(max(index, 0), len(spec) - 1)]
        elif rng.random() < resample or not isinstance(current, (int, float)) or isinstance(current, bool):
            config[key] = spec.sample(rng) if isinstance(spec, space_mod.Domain) else spec()
        else:
            value = current * factors[int(rng.integers(len(factors)))]
            config[key] = int(round(value)) if isinstance(current, int) else float(value)
    return config


def _describe(mutations: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_describe(v) if isinstance(v, dict) else v.to_json() if isinstance(v, space_mod.Domain)
                else v if isinstance(v, list) else getattr(v, "__qualname__", repr(v))) for k, v in mutations.items()}
