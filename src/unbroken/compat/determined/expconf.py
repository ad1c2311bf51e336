"""A Determined experiment config (YAML or JSON) as what `unbroken run` needs.

Read: ``name``, ``hyperparameters`` (constants; a search space is an error naming the
parameter: one `unbroken run` is one trial, `unbroken sweep run --config` searches, see
:mod:`.searchconf`), ``searcher.max_length`` (``N``, ``{batches: N}``, ``{epochs: N}`` or
``{records: N}``), ``max_restarts`` (Determined's default 5), ``checkpoint_storage``
(``shared_fs``, ``directory``, ``s3``, ``gcs``, or a location string), ``min_checkpoint_period``
and ``entrypoint``. Everything else is kept in :attr:`ExperimentPlan.config` and ignored.

:func:`load_experiment_config` returns an :class:`ExperimentPlan`; the CLI turns it into
`unbroken run` options (:meth:`~ExperimentPlan.run_options`) and the child's environment
(:meth:`~ExperimentPlan.child_env`), which the compat layer in the child reads.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from ...errors import ConfigError
from ...sweep.spec import _read_file as read_file
from . import _env

DETERMINED_DEFAULT_MAX_RESTARTS = 5
_SEARCH_TYPES = ("int", "double", "log", "categorical")
LENGTH_UNITS = ("batches", "epochs", "records")


@dataclasses.dataclass(frozen=True)
class ExperimentPlan:
    """What a Determined experiment config asks of one `unbroken run`."""

    name: str
    hparams: dict[str, Any]
    searcher_length: int | None
    max_restarts: int
    storage: str | None
    storage_env: dict[str, str]
    min_checkpoint_period: tuple[str, int] | None
    entrypoint: list[str] | None
    config: dict[str, Any]

    def run_options(self) -> dict[str, Any]:
        """Keyword arguments for ``launch.runconfig.RunConfig`` (besides ``command``)."""
        from ...launch import restart  # noqa: PLC0415 - only the CLI needs the launch layer

        return {"name": self.name, "storage": self.storage, "stop": restart.max_failures(self.max_restarts)}

    def cli_args(self) -> list[str]:
        """The same as `unbroken run` options: ``--name N --max-restarts K [--storage S]``."""
        args = ["--name", self.name, "--max-restarts", str(self.max_restarts)]
        return [*args, "--storage", self.storage] if self.storage else args

    def child_env(self) -> dict[str, str]:
        """Variables for the supervisor's environment (inherited by the child): hparams, searcher
        length, the config itself, and the object store's endpoint and keys when given."""
        config = {k: v for k, v in self.config.items() if k != "checkpoint_storage"}  # keys travel apart
        return {**_env.encode(self.hparams, self.searcher_length, config), **self.storage_env}


def load_experiment_config(source: str | Path | Mapping[str, Any], *,
                           searcher_length: int | None = None) -> ExperimentPlan:
    """Parse a config file (``.yaml``/``.yml``/``.json``) or mapping; ConfigError names what is wrong.

    ``searcher_length`` (from `--searcher-length`) wins over ``searcher.max_length``.
    """
    config = read_config(source)
    length = searcher_length if searcher_length is not None else max_length_of(config.get("searcher") or {})
    return experiment_plan(config, resolve_hparams(config.get("hyperparameters") or {}), length)


def read_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The config of a file (``.json`` by suffix, else YAML) or a mapping, as a dict; ConfigError if not a mapping."""
    return _read(source) if not isinstance(source, Mapping) else dict(source)


def experiment_plan(config: Mapping[str, Any], hparams: dict[str, Any], searcher_length: int | None) -> ExperimentPlan:
    """The plan of ``config`` with these (already resolved) ``hparams`` and length; ConfigError names a bad field."""
    storage_cfg = config.get("checkpoint_storage")
    return ExperimentPlan(
        name=_name(config.get("name")), hparams=hparams,
        searcher_length=None if searcher_length is None else _env.check_length(searcher_length, "searcher.max_length"),
        max_restarts=_max_restarts(config.get("max_restarts", DETERMINED_DEFAULT_MAX_RESTARTS)),
        storage=storage_location(storage_cfg), storage_env=_storage_env(storage_cfg),
        min_checkpoint_period=_period(config.get("min_checkpoint_period")),
        entrypoint=_entrypoint(config.get("entrypoint")), config=dict(config))


def resolve_hparams(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Constant hyperparameters as plain values (``{type: const, val: V}`` -> V; nested groups kept)."""
    if not isinstance(space, Mapping):
        raise ConfigError(f"hyperparameters{prefix and ' ' + prefix} must be a mapping, not {type(space).__name__}")
    out = {}
    for key, value in space.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and "type" in value:
            out[key] = _constant(where, value)
        elif isinstance(value, Mapping):
            out[key] = resolve_hparams(value, where)
        else:
            out[key] = value
    return out


def storage_location(storage: str | Mapping[str, Any] | None) -> str | None:
    """A checkpoint_storage setting as an unbroken location (a folder or an object-store URL)."""
    if storage is None or isinstance(storage, str):
        return storage
    if not isinstance(storage, Mapping):
        raise ConfigError(f"checkpoint_storage must be a mapping or a location, not {type(storage).__name__}")
    kind = storage.get("type")
    if kind == "shared_fs":
        return str(Path(_field(storage, "host_path")) / (storage.get("storage_path") or ""))
    if kind == "directory":
        return str(_field(storage, "container_path"))
    if kind in ("s3", "gcs"):
        prefix = str(storage.get("prefix") or "").strip("/")
        url = f"{'s3' if kind == 's3' else 'gs'}://{_field(storage, 'bucket')}"
        return f"{url}/{prefix}" if prefix else url
    raise ConfigError(f"checkpoint_storage type {kind!r} is not supported: use shared_fs, directory, s3 or gcs")


def _storage_env(storage: Any) -> dict[str, str]:
    if not isinstance(storage, Mapping) or storage.get("type") != "s3":
        return {}
    names = {"endpoint_url": "AWS_ENDPOINT_URL", "access_key": "AWS_ACCESS_KEY_ID",
             "secret_key": "AWS_SECRET_ACCESS_KEY"}
    env = {var: str(storage[key]) for key, var in names.items() if storage.get(key)}
    if env.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        env["AWS_ALLOW_HTTP"] = "true"
    return env


def _read(path: str | Path) -> dict[str, Any]:
    value = read_file(Path(path))  # the sweep file reader: JSON by suffix, else YAML
    if not isinstance(value, dict):
        raise ConfigError(f"the experiment config {path} must be a mapping at the top")
    return value


def _name(name: Any) -> str:
    if name is None:
        raise ConfigError("the experiment config needs a name: name: my-experiment")
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-._")[:128]
    if not clean:
        raise ConfigError(f"the experiment name {name!r} has no letter or digit")
    return clean


def _constant(where: str, spec: Mapping[str, Any]) -> Any:
    kind = spec.get("type")
    if kind == "const":
        return _field(spec, "val", f"hyperparameters.{where}")
    if kind in _SEARCH_TYPES:
        raise ConfigError(f"hyperparameter {where} is a search space (type {kind}): `unbroken run` runs one trial; "
                          "give it a constant value, or search it with `unbroken sweep run --config FILE -- CMD`")
    raise ConfigError(f"hyperparameter {where} has an unknown type {kind!r}")


def max_length_of(searcher: Mapping[str, Any]) -> int | None:
    """``searcher.max_length`` as a number of units (``N``, ``{batches: N}``, ``{epochs: N}`` or
    ``{records: N}``), None when absent; the number is checked by the caller."""
    length = searcher.get("max_length") if isinstance(searcher, Mapping) else None
    if isinstance(length, Mapping):
        if len(length) != 1 or next(iter(length)) not in LENGTH_UNITS:
            raise ConfigError(f"searcher.max_length must name one unit ({{batches: N}}, {{epochs: N}} or "
                              f"{{records: N}}), not {dict(length)!r}")
        (length,) = length.values()
    return length


def _max_restarts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"max_restarts must be a whole number of 0 or more, not {value!r}")
    return value


def _period(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if isinstance(value, Mapping) and len(value) == 1:
        ((unit, n),) = value.items()
        if unit in LENGTH_UNITS:
            return unit, _env.check_length(n, f"min_checkpoint_period.{unit}")
    raise ConfigError(f"min_checkpoint_period must be {{batches: N}}, {{epochs: N}} or {{records: N}}, not {value!r}")


def _entrypoint(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"entrypoint must be a command line or a list of words, not {value!r}")


def _field(mapping: Mapping[str, Any], key: str, where: str = "checkpoint_storage") -> Any:
    if mapping.get(key) is None:
        raise ConfigError(f"{where} needs {key!r}")
    return mapping[key]
