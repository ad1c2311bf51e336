"""Validation of the values the index stores, done before anything is written.

Pure functions, safe from any thread; they raise :class:`~unbroken.errors.ConfigError` naming
the value, so that a bad value never reaches SQLite (where it would be an OverflowError or a
poisoned transaction) nor a checkpoint on disk.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from ..errors import ConfigError

#: SQLite's INTEGER is a signed 64-bit number: step counts and sizes must stay below this.
MAX_INTEGER = 2**63 - 1


def check_steps(value: Any, what: str = "steps_completed") -> int:
    """``value`` as an int in ``[0, 2**63)``; else ConfigError naming ``what`` and the value.

    Accepts ints and integer scalars (numpy integers, 0-d integer tensors); refuses bools,
    floats, strings and arrays. Call it before writing a checkpoint whose step count will be
    indexed.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a whole number, not the bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{what} must be a whole number, not {_show(value)} "
                          f"({type(value).__name__})") from None
    if not 0 <= number <= MAX_INTEGER:
        raise ConfigError(f"{what} must be between 0 and 2**63-1, not {_show(number)}")
    return number


def metric_value(name: str, value: Any) -> float | None:
    """A metric value as stored: a finite float, or None for None, NaN and +-inf.

    Numbers and one-element arrays/tensors are accepted; anything else (strings, bools, arrays
    of several elements, ints too large for a float) raises ConfigError naming the metric.
    """
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        try:
            value = value.item()
        except Exception:  # noqa: BLE001 - numpy ValueError, torch RuntimeError: several elements
            shape = tuple(getattr(value, "shape", ()))
            raise ConfigError(f"metric {name!r} must be a single number, not a {type(value).__name__} "
                              f"of shape {shape}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"metric {name!r} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"metric {name!r} is too large for a float: {_show(value)}") from None
    return number if math.isfinite(number) else None


def check_fraction(value: Any, what: str = "progress") -> float:
    """``value`` as a float in ``[0, 1]``; else ConfigError."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{what} must be a number between 0 and 1, not {_show(value)}") from None
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{what} must be between 0 and 1, not {_show(value)}")
    return number


def _show(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and value.bit_length() > 200:  # repr of a huge int is slow, or refused
        return f"an int of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
