"""Validation of every id a URL carries: experiment names, trial and attempt numbers, checkpoint
uuids, metric groups and names. Logs and checkpoints are addressed by these ids, never by paths.

Each function returns the value in its proper type or raises ConfigError (HTTP 400). A ``..``,
a slash, a backslash or a control character is refused in every id that could name a file;
metric names (query values, never paths) may hold slashes but not ``../`` or control characters.
"""

from __future__ import annotations

import re

from ..config import check_name
from ..errors import ConfigError

_NUMBER_RE = re.compile(r"[1-9][0-9]{0,17}")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
                      r"|[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
_METRIC_RE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def refuse_traversal(text: str, what: str) -> str:
    """``text`` unless it holds ``..``, a slash, a backslash or a control character."""
    if not isinstance(text, str) or ".." in text or "/" in text or "\\" in text or \
            any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(f"invalid {what} {text!r}")
    return text


def experiment(text: str) -> str:
    """An experiment name (the rules of :func:`unbroken.config.check_name`)."""
    return check_name(refuse_traversal(text, "experiment name"))


def number(text: str, what: str = "trial number") -> int:
    """A positive decimal number without sign or leading zero (trial or attempt number)."""
    if not _NUMBER_RE.fullmatch(refuse_traversal(text, what)):
        raise ConfigError(f"invalid {what} {text!r}: a positive whole number")
    return int(text)


def checkpoint_uuid(text: str) -> str:
    """A checkpoint's uuid (letters, digits, '-', '_'; no dots, no separators)."""
    if not _UUID_RE.fullmatch(refuse_traversal(text, "checkpoint uuid")):
        raise ConfigError(f"invalid checkpoint uuid {text!r}")
    return text


def metric_part(text: str, what: str) -> str:
    """A metric group or name: 1-200 printable characters without ``../`` (names such as
    ``train/loss`` are fine: they are only ever compared in queries, never used as paths)."""
    if not isinstance(text, str) or not _METRIC_RE.fullmatch(text) or "../" in text or "..\\" in text:
        raise ConfigError(f"invalid {what} {text!r}")
    return text
