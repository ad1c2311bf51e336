"""Durations as people write them on command lines: ``90``, ``90s``, ``15m``, ``11h30m``, ``1d2h``, ``2:30:00``.

One parser for `unbroken run` and `unbroken slurm submit`. Values are finite and non-negative;
``inf`` is accepted only where the caller allows it (e.g. ``--wait inf``: wait without limit).
"""

from __future__ import annotations

import math
import re

from ..errors import ConfigError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_COMPOUND = re.compile(rf"^(?:{_NUMBER}[dhms])+$")
_PART = re.compile(rf"({_NUMBER})([dhms])")
_CLOCK = re.compile(rf"^{_NUMBER}(?::{_NUMBER}){{1,2}}$")
_EXAMPLES = "examples: 90, 90s, 15m, 11h30m, 1d2h, 2:30:00"


def parse_duration(text: str | float | int, what: str = "duration", *, allow_inf: bool = False) -> float:
    """Seconds from a duration; ``what`` (e.g. ``"--grace"``) names it in the error.

    Accepts plain seconds (``90``, ``1.5``), unit sequences with each of d/h/m/s at most once and
    in that order (``1d2h``, ``11h30m``, ``15m``), and clock form ``M:S`` or ``H:M:S``. Raises
    :class:`~unbroken.errors.ConfigError` for anything else, NaN, negative values, and infinity
    unless ``allow_inf`` (then ``inf`` gives ``math.inf``).
    """
    raw = str(text).strip().lower()
    if allow_inf and raw in ("inf", "infinity"):
        return math.inf
    if raw.startswith("-"):
        raise ConfigError(f"{what}: {text!r} is negative; a duration must be 0 or more ({_EXAMPLES})")
    seconds = _seconds(raw)
    if seconds is None:
        hint = " or 'inf'" if allow_inf else ""
        raise ConfigError(f"{what}: {text!r} is not a duration ({_EXAMPLES}{hint})")
    if not math.isfinite(seconds):
        raise ConfigError(f"{what}: {text!r} is not a finite duration ({_EXAMPLES})")
    return seconds


def _seconds(raw: str) -> float | None:
    if re.fullmatch(_NUMBER, raw):
        return float(raw)
    if _CLOCK.match(raw):
        seconds = 0.0
        for part in raw.split(":"):
            seconds = seconds * 60 + float(part)
        return seconds
    if _COMPOUND.match(raw):
        parts = _PART.findall(raw)
        units = [unit for _, unit in parts]
        if units != sorted(set(units), key="dhms".index):
            return None  # a unit twice, or out of order: 30m11h is more likely a typo than a request
        return sum(float(number) * _UNITS[unit] for number, unit in parts)
    return None
