"""The environment-variable protocol between `unbroken run` and the training process it starts.

The supervisor encodes a :class:`LaunchEnv` into the child's environment with
:meth:`LaunchEnv.merged_into` (or :meth:`LaunchEnv.to_env`); ``unbroken.init()`` in the child decodes
it with :meth:`LaunchEnv.from_env`. This module is the one owner of the variable names and of
their formats; nothing else reads or writes them by name::

    UNBROKEN_HOME            the home folder (also read by resolve_home() outside a supervisor)
    UNBROKEN_EXPERIMENT      the experiment name
    UNBROKEN_TRIAL           the trial number (>= 1)
    UNBROKEN_ATTEMPT_ID      the id of the attempt row the supervisor created (>= 1)
    UNBROKEN_PREEMPT_SIGNAL  the extra signal that asks for a save-and-stop (e.g. USR2)
    UNBROKEN_DEADLINE        Unix time by which the process must have saved and stopped
    UNBROKEN_STORAGE         where the trial's checkpoints live (a folder or a URL such as s3://b/p)
    UNBROKEN_DB              the tracking index (a PostgreSQL URL; default: SQLite in the home)

The last two are also read by unbroken.init() outside a supervisor (they are user settings too);
a supervisor always passes the values it resolved, so parent and child agree. ``UNBROKEN_CACHE``
(where remote checkpoints are downloaded) is a user setting only, and so are the supervisor's::

    UNBROKEN_SPOT            poll a cloud's spot notices: aws, gcp, azure or auto (`unbroken run --spot`)
    UNBROKEN_SPOT_ENDPOINT   the metadata service's base URL (default http://169.254.169.254)
    UNBROKEN_CHAIN_LINK      which link of a `slurm submit --chain` job chain this job is (1, 2, ...)

A spot notice's time reaches the child as ``UNBROKEN_DEADLINE`` (of the children started after it;
a running child gets the preempt signal).

A process is *supervised* when both the trial and the attempt id are set: the supervisor then
owns the attempt row (it ends it) and holds the trial's writer lease.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

ENV_HOME = "UNBROKEN_HOME"
ENV_EXPERIMENT = "UNBROKEN_EXPERIMENT"
ENV_TRIAL = "UNBROKEN_TRIAL"
ENV_ATTEMPT = "UNBROKEN_ATTEMPT_ID"
ENV_PREEMPT_SIGNAL = "UNBROKEN_PREEMPT_SIGNAL"
ENV_DEADLINE = "UNBROKEN_DEADLINE"
ENV_STORAGE = "UNBROKEN_STORAGE"
ENV_DB = "UNBROKEN_DB"
ENV_CACHE = "UNBROKEN_CACHE"
ENV_SPOT = "UNBROKEN_SPOT"
ENV_SPOT_ENDPOINT = "UNBROKEN_SPOT_ENDPOINT"
ENV_CHAIN_LINK = "UNBROKEN_CHAIN_LINK"

#: Every variable of the protocol, in the order of the fields of LaunchEnv.
PROTOCOL_VARIABLES = (ENV_HOME, ENV_EXPERIMENT, ENV_TRIAL, ENV_ATTEMPT, ENV_PREEMPT_SIGNAL, ENV_DEADLINE, ENV_STORAGE,
                      ENV_DB)


@dataclasses.dataclass(frozen=True)
class LaunchEnv:
    """What a supervisor tells its child; every field may be unset (None). Pure value object."""

    home: Path | None = None
    experiment: str | None = None
    trial: int | None = None
    attempt_id: int | None = None
    preempt_signal: str | None = None
    deadline: float | None = None  # Unix time
    storage: str | None = None  # the trial's checkpoint location (folder or URL)
    db: str | None = None  # the tracking index URL

    def __post_init__(self) -> None:
        for field, var in zip(dataclasses.fields(self), PROTOCOL_VARIABLES):
            value = getattr(self, field.name)
            if value is not None:
                object.__setattr__(self, field.name, _DECODERS[var](value))

    @property
    def supervised(self) -> bool:
        """True when a supervisor started this process (trial and attempt id are both set)."""
        return self.trial is not None and self.attempt_id is not None

    def to_env(self) -> dict[str, str]:
        """The variables of the fields that are set, as strings (unset fields are left out)."""
        values = dataclasses.astuple(self)
        return {var: _encode(value) for var, value in zip(PROTOCOL_VARIABLES, values) if value is not None}

    def merged_into(self, environ: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``environ`` whose protocol variables are exactly this one's (stale ones removed)."""
        env = {k: v for k, v in environ.items() if k not in PROTOCOL_VARIABLES}
        env.update(self.to_env())
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "LaunchEnv":
        """Decode the protocol variables of ``environ``; empty ones count as unset.

        Raises :class:`~unbroken.errors.ConfigError` naming the variable when a value is malformed.
        """
        return cls(*(environ.get(var) or None for var in PROTOCOL_VARIABLES))


def _encode(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _home(text: str | Path) -> Path:
    return Path(text).expanduser()


def _experiment(text: str) -> str:
    from .config import check_name  # noqa: PLC0415 - config imports this module

    try:
        return check_name(text)
    except ConfigError as exc:
        raise ConfigError(f"${ENV_EXPERIMENT}: {exc}") from None


def _positive_int(var: str):
    def decode(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(f"${var} must be a positive integer, not {text!r}")
        return value
    return decode


def _signal(text: str) -> str:
    from .signals import parse_signal  # noqa: PLC0415 - signals imports errors only, but keep this module bare

    try:
        return parse_signal(text).name
    except ConfigError as exc:
        raise ConfigError(f"${ENV_PREEMPT_SIGNAL}: {exc}") from None


def _deadline(value: str | float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"${ENV_DEADLINE} must be a Unix time in seconds, not {value!r}")
    return seconds


_DECODERS = {
    ENV_HOME: _home,
    ENV_EXPERIMENT: _experiment,
    ENV_TRIAL: _positive_int(ENV_TRIAL),
    ENV_ATTEMPT: _positive_int(ENV_ATTEMPT),
    ENV_PREEMPT_SIGNAL: _signal,
    ENV_DEADLINE: _deadline,
    ENV_STORAGE: str,
    ENV_DB: str,
}
