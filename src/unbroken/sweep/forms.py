"""The file form shared by searchers, schedulers and executors: a name, or ``{KEY: name, ...options}``."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ConfigError


def kind_and_options(raw: Any, key: str, what: str, example: str, default: str | None = None) -> tuple[Any, dict]:
    """``(name, options)`` of ``raw`` (None gives ``default``); ConfigError naming ``what`` otherwise."""
    if raw is None:
        return default, {}
    if isinstance(raw, str):
        return raw, {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{what} must be a name or a mapping such as {example}, not {raw!r}")
    options = dict(raw)
    return options.pop(key, default), options
