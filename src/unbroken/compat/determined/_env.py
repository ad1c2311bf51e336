"""The environment variables that carry a Determined experiment config's settings to the child.

`unbroken run --config FILE` (or anyone launching a Determined-style program) sets them; the
compat layer in the child reads them. This module is the one owner of their names::

    UNBROKEN_DET_HPARAMS           the trial's hyperparameters, a JSON object
    UNBROKEN_DET_SEARCHER_LENGTH   the length of the one searcher operation (an int >= 1)
    UNBROKEN_DET_CONFIG            the whole experiment config, a JSON object (info.trial._config)
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from ...errors import ConfigError

ENV_HPARAMS = "UNBROKEN_DET_HPARAMS"
ENV_SEARCHER_LENGTH = "UNBROKEN_DET_SEARCHER_LENGTH"
ENV_CONFIG = "UNBROKEN_DET_CONFIG"


def encode(hparams: Mapping[str, Any] | None = None, searcher_length: int | None = None,
           config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The variables for the given values (unset values are left out)."""
    env = {}
    if hparams is not None:
        env[ENV_HPARAMS] = json.dumps(dict(hparams), sort_keys=True)
    if searcher_length is not None:
        env[ENV_SEARCHER_LENGTH] = str(check_length(searcher_length, "searcher length"))
    if config is not None:
        env[ENV_CONFIG] = json.dumps(dict(config), sort_keys=True, default=str)
    return env


def hparams(environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The hyperparameters of ``$UNBROKEN_DET_HPARAMS``, or None when unset."""
    return _json_object(environ, ENV_HPARAMS)


def config(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The experiment config of ``$UNBROKEN_DET_CONFIG`` ({} when unset)."""
    return _json_object(environ, ENV_CONFIG) or {}


def searcher_length(environ: Mapping[str, str] = os.environ) -> int | None:
    """The searcher length of ``$UNBROKEN_DET_SEARCHER_LENGTH``, or None when unset."""
    text = environ.get(ENV_SEARCHER_LENGTH)
    if not text:
        return None
    try:
        return check_length(int(text), f"${ENV_SEARCHER_LENGTH}")
    except ValueError:
        raise ConfigError(f"${ENV_SEARCHER_LENGTH} must be a whole number, not {text!r}") from None


def check_length(value: Any, what: str) -> int:
    """``value`` if it is an int >= 1, else ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a whole number of 1 or more, not {value!r}")
    return value


def _json_object(environ: Mapping[str, str], var: str) -> dict[str, Any] | None:
    text = environ.get(var)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"${var} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"${var} must be a JSON object, not {type(value).__name__}")
    return value
