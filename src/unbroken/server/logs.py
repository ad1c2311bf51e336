"""Attempt logs by id: (trial, attempt number) -> the bytes of its log from an offset.

The file is the one the index records for the attempt (``log_path``, written by the supervisor)
or, without one, the trial's standard place (:class:`unbroken.paths.TrialPaths`). A URL never
names a file. Reads are bounded (``MAX_CHUNK``) so following a huge log is paged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..paths import TrialPaths
from ..tracking import Attempt, Trial

#: The most bytes one request returns.
MAX_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class LogChunk:
    """Bytes ``[offset, next_offset)`` of a log; ``size`` is the file's size (None: no file).

    ``offset`` is 0 when the caller's offset lay past the end (the file was truncated or
    replaced: read from the start again).
    """

    data: bytes
    offset: int
    next_offset: int
    size: int | None


def log_path(home: Path, trial: Trial, attempt: Attempt) -> Path:
    """Where the log of ``attempt`` is: its recorded path, else the trial's standard place."""
    if attempt.log_path:
        return Path(attempt.log_path)
    return TrialPaths(home, trial.experiment, trial.number).attempt_log(attempt.number)


def read_chunk(path: Path, offset: int, limit: int = MAX_CHUNK) -> LogChunk:
    """At most ``limit`` bytes of ``path`` from ``offset`` (see :class:`LogChunk`)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if offset > size:
                offset = 0
            f.seek(offset)
            data = f.read(min(limit, MAX_CHUNK))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return LogChunk(b"", 0, 0, None)
    return LogChunk(data, offset, offset + len(data), size)
