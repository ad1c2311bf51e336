"""Search algorithms: which config each trial of a sweep gets.

A searcher is a small object driven by the sweep's driver, one call at a time:

* ``bind(space, num_samples, metric, mode)`` once, before any trial starts (errors then);
* ``total()``: how many trials the sweep has;
* ``suggest(number)``: the config of trial ``number`` (1, 2, ...), or None to wait (an adaptive
  searcher may need results first); the same number always gets the same config, also after
  the driver restarted (that is how a sweep resumes);
* ``on_complete(number, result, error)``: a trial ended (result is its last result, or None).

:class:`BasicSearcher` (grid and random search) needs no state at all: trial ``k``'s config
is a pure function of (space, seed, k), drawn from a generator seeded with ``(seed, k)``.
Optuna's samplers are in :mod:`.optuna_search`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError
from . import space as space_mod
from .forms import kind_and_options


class Searcher:
    """Base class (see the module docstring)."""

    #: Name in files: ``search: {algorithm: NAME}``.
    name = "searcher"

    def bind(self, space: Mapping[str, Any], num_samples: int, metric: str | None, mode: str | None) -> None:
        self.space, self.num_samples, self.metric, self.mode = space, num_samples, metric, mode

    def total(self) -> int:
        return self.num_samples

    def suggest(self, number: int) -> dict[str, Any] | None:
        raise NotImplementedError

    def on_complete(self, number: int, result: Mapping[str, Any] | None, error: bool = False) -> None:
        """A trial ended; nothing to do for searchers that do not learn."""

    def close(self) -> None:
        """Release what the searcher holds (files, connections)."""

    def describe(self) -> dict[str, Any]:
        """What identifies the searcher's choices (compared when a sweep is resumed)."""
        return {"algorithm": self.name}


class BasicSearcher(Searcher):
    """Grid search crossed with random sampling, as Ray Tune's default search.

    Every grid combination is repeated ``num_samples`` times (grid-major: trial 1..G is the
    first repeat of all G combinations); the other domains are sampled for each trial.
    """

    name = "random"

    def __init__(self, seed: int | None = 0):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"the search seed must be a whole number >= 0, not {seed!r}")
        self.seed = 0 if seed is None else seed

    def total(self) -> int:
        return space_mod.grid_size(self.space) * self.num_samples

    def suggest(self, number: int) -> dict[str, Any]:
        if not 1 <= number <= self.total():
            raise ConfigError(f"trial {number} is outside the sweep's {self.total()} trials")
        grid_index = (number - 1) % space_mod.grid_size(self.space)
        return space_mod.resolve(self.space, grid_index, np.random.default_rng([self.seed, number]))

    def describe(self) -> dict[str, Any]:
        return {"algorithm": self.name, "seed": self.seed}


class GridSearcher(BasicSearcher):
    """Grid search: every combination; a space with sampled domains is sampled too (as BasicSearcher)."""

    name = "grid"


def make_searcher(raw: Any) -> Searcher:
    """A searcher from the file form ``{algorithm: random|grid|optuna, ...}``, a name, or a Searcher."""
    if isinstance(raw, Searcher):
        return raw
    algorithm, options = kind_and_options(raw, "algorithm", "search", "{algorithm: random, seed: 0}", "random")
    if algorithm in ("random", "basic", "grid"):
        unknown = set(options) - {"seed"}
        if unknown:
            raise ConfigError(f"search algorithm {algorithm!r} takes only 'seed', not {sorted(unknown)}")
        return (GridSearcher if algorithm == "grid" else BasicSearcher)(seed=options.get("seed", 0))
    if algorithm == "optuna":
        from .optuna_search import OptunaSearcher  # noqa: PLC0415 - optuna is an optional extra

        return OptunaSearcher(**options)
    raise ConfigError(f"unknown search algorithm {algorithm!r}; known: random, grid, optuna")
