"""Search spaces: parameter domains, nested dicts of them, and the YAML/JSON form.

A space is a (nested) dict whose leaves are constants or :class:`Domain` objects::

    {"lr": loguniform(1e-4, 1e-1), "model": {"layers": grid_search([1, 2]), "act": choice(["relu", "tanh"])},
     "seed": 0}

In a file the same is written with one-key dicts (``{"loguniform": [1e-4, 1e-1]}``) or with
``{"type": "loguniform", "low": 1e-4, "high": 1e-1}``; :func:`parse_space` turns either into
domains and raises :class:`~unbroken.errors.ConfigError` naming the parameter for an unknown
type, wrong arguments or an empty space.

Grid parameters are crossed with each other (every combination, as Ray Tune's ``grid_search``);
the other domains are sampled. Pure code: sampling takes the caller's ``numpy`` generator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping

from ..errors import ConfigError

Path = tuple[str, ...]


class Domain:
    """A parameter's set of values. ``sample(rng)`` draws one."""

    kind = "domain"

    def sample(self, rng) -> Any:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The file form of this domain (``{"type": kind, ...}``)."""
        return {"type": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Grid(Domain):
    """Every value, each in its own trial (crossed with the other grids)."""

    values: tuple
    kind = "grid"

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ConfigError("grid_search needs at least one value")

    def sample(self, rng) -> Any:  # only used where a grid is resampled (PBT)
        return self.values[int(rng.integers(len(self.values)))]


@dataclasses.dataclass(frozen=True)
class Choice(Domain):
    """One of ``categories``, uniformly."""

    categories: tuple
    kind = "choice"

    def __post_init__(self):
        object.__setattr__(self, "categories", tuple(self.categories))
        if not self.categories:
            raise ConfigError("choice needs at least one category")

    def sample(self, rng) -> Any:
        return self.categories[int(rng.integers(len(self.categories)))]


@dataclasses.dataclass(frozen=True)
class Uniform(Domain):
    """A float in [low, high), uniformly."""

    low: float
    high: float
    kind = "uniform"

    def __post_init__(self):
        _check_range(self.kind, self.low, self.high)

    def sample(self, rng) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class LogUniform(Domain):
    """A float in [low, high), uniform in log space (both > 0)."""

    low: float
    high: float
    kind = "loguniform"

    def __post_init__(self):
        _check_range(self.kind, self.low, self.high)
        if self.low <= 0:
            raise ConfigError(f"loguniform needs low > 0, not {self.low!r}")

    def sample(self, rng) -> float:
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclasses.dataclass(frozen=True)
class RandInt(Domain):
    """An int in [low, high) (high excluded, as Ray Tune's ``randint``)."""

    low: int
    high: int
    kind = "randint"

    def __post_init__(self):
        for value in (self.low, self.high):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"randint needs whole numbers, not {value!r}")
        _check_range(self.kind, self.low, self.high)

    def sample(self, rng) -> int:
        return int(rng.integers(self.low, self.high))


def _check_range(kind: str, low: Any, high: Any) -> None:
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{kind} needs finite numbers, not {value!r}")
    if not low < high:
        raise ConfigError(f"{kind} needs low < high, not [{low!r}, {high!r})")


# -- Ray Tune-style constructors ----------------------------------------------------------------
def grid_search(values) -> Grid:
    return Grid(tuple(values))


def choice(categories) -> Choice:
    return Choice(tuple(categories))


def uniform(low: float, high: float) -> Uniform:
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    return LogUniform(low, high)


def randint(low: int, high: int) -> RandInt:
    return RandInt(low, high)


KINDS: dict[str, type[Domain]] = {cls.kind: cls for cls in (Grid, Choice, Uniform, LogUniform, RandInt)}
_ALIASES = {"grid_search": "grid", "categorical": "choice", "int": "randint"}


# -- the file form ------------------------------------------------------------------------------
def parse_space(raw: Any) -> dict[str, Any]:
    """A space from its file form (or a dict that already holds domains); ConfigError if invalid or empty."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("the search space is empty: give at least one parameter, e.g. "
                          "space: {lr: {loguniform: [0.0001, 0.1]}}")
    space = _parse_dict(raw, ())
    if not any(True for _ in leaves(space)):
        raise ConfigError("the search space is empty: it has no parameter")
    return space


def _parse_dict(raw: Mapping, path: Path) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"parameter names must be non-empty strings, not {key!r} in {_name(path) or 'the space'}")
        out[key] = parse_value(value, (*path, key))
    return out


def parse_value(value: Any, path: Path) -> Any:
    if isinstance(value, Domain):
        return value
    if isinstance(value, Mapping):
        if "type" in value and isinstance(value["type"], str):
            return _domain(value["type"], {k: v for k, v in value.items() if k != "type"}, path)
        if len(value) == 1:
            kind, args = next(iter(value.items()))
            if isinstance(args, (list, tuple)):
                return _domain(kind, args, path)
        if not value:
            raise ConfigError(f"parameter {_name(path)!r} is an empty dict")
        return _parse_dict(value, path)
    return value


def is_domain_form(value: Any) -> bool:
    """Whether a mapping names a known domain (``{"type": KIND, ...}`` or ``{KIND: [...]}``)."""
    if not isinstance(value, Mapping):
        return False
    if isinstance(value.get("type"), str):
        return True
    return len(value) == 1 and _ALIASES.get(next(iter(value)), next(iter(value))) in KINDS


def _domain(kind: str, args: Any, path: Path) -> Domain:
    name = _ALIASES.get(kind, kind)
    cls = KINDS.get(name)
    if cls is None:
        raise ConfigError(f"unknown parameter type {kind!r} for {_name(path)!r}; known types: "
                          f"{', '.join(sorted(KINDS))}")
    try:
        if cls in (Grid, Choice):
            values = args.get("values", args.get("categories")) if isinstance(args, Mapping) else args
            return cls(tuple(values))
        return cls(**args) if isinstance(args, Mapping) else cls(*args)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"parameter {_name(path)!r}: {kind} {_describe(args)}: {exc}") from None


def _describe(args: Any) -> str:
    return repr(list(args)) if isinstance(args, (list, tuple)) else repr(dict(args))


def _name(path: Path) -> str:
    return "/".join(path)


def to_json(space: Mapping[str, Any]) -> dict[str, Any]:
    """The file form of a space (domains as ``{"type": ...}`` dicts)."""
    return {k: (v.to_json() if isinstance(v, Domain) else to_json(v) if isinstance(v, Mapping) else v)
            for k, v in space.items()}


# -- walking and resolving ---------------------------------------------------------------------
def leaves(space: Mapping[str, Any], path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, leaf) of a nested space, in sorted key order (a stable order for sampling)."""
    for key in sorted(space):
        value = space[key]
        if isinstance(value, Mapping):
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key), value


def grid_size(space: Mapping[str, Any]) -> int:
    """How many grid combinations the space has (1 without grids)."""
    return math.prod(len(v.values) for _, v in leaves(space) if isinstance(v, Grid))


def resolve(space: Mapping[str, Any], grid_index: int, rng) -> dict[str, Any]:
    """One config: grid combination ``grid_index`` (row-major over sorted paths), the rest sampled."""
    chosen: dict[Path, Any] = {}
    for path, grid in reversed([(p, v) for p, v in leaves(space) if isinstance(v, Grid)]):
        grid_index, position = divmod(grid_index, len(grid.values))
        chosen[path] = grid.values[position]
    out: dict[str, Any] = {}
    for path, leaf in leaves(space):
        value = chosen[path] if path in chosen else leaf.sample(rng) if isinstance(leaf, Domain) else leaf
        set_path(out, path, value)
    return out


def set_path(target: dict, path: Path, value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def get_path(source: Mapping, path: Path) -> Any:
    for key in path:
        source = source[key]
    return source
