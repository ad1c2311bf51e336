"""What the sweep driver tells a trial process, and what the trial process tells it back.

Driver -> trial: a :class:`Directive` in ``$UNBROKEN_SWEEP_TRIAL`` (JSON, or ``@PATH`` of a JSON
file), inherited through ``unbroken run`` by every restart of the segment: the trial's config,
where the segment ends, the stop conditions and checkpoint settings, and (for the worker) the
trainable to import. The trial's identity (experiment, number, attempt) comes as for any
supervised process (:mod:`unbroken.envvars`).

Trial -> driver: when a segment ends (the budget is reached, or the trial is done), the trial
process writes ``segment-<k>.json`` into ``result_dir`` atomically (temporary file, fsync,
rename) *after* the checkpoint of that point is committed, then exits 0. The checkpoint's
metadata carries the same result, so a process restarted after the commit but before the file
writes the file from the restored checkpoint. Pure data and file I/O.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

ENV_DIRECTIVE = "UNBROKEN_SWEEP_TRIAL"
#: The key of a checkpoint's metadata that holds the sweep's record of that point.
META_KEY = "sweep"


@dataclasses.dataclass(frozen=True)
class Directive:
    """One segment of one trial (see the module docstring)."""

    sweep: str
    trial: int
    segment: int
    config: dict[str, Any]
    result_dir: str
    stop_at: int | None = None
    stop: dict[str, Any] | None = None
    metric: str | None = None
    checkpoint_freq: int = 0
    checkpoint_at_end: bool = False
    save_at_pause: bool = True
    keep: int = 2
    trainable: str | None = None
    restore: str | None = None  # a checkpoint to prefer among those with the most steps (an exploit's copy)

    def to_env(self) -> dict[str, str]:
        return {ENV_DIRECTIVE: json.dumps(dataclasses.asdict(self), sort_keys=True)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Directive | None":
        """The directive of this process, or None when no sweep started it."""
        text = environ.get(ENV_DIRECTIVE)
        if not text:
            return None
        try:
            if text.startswith("@"):
                text = Path(text[1:]).read_text()
            return cls(**json.loads(text))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"${ENV_DIRECTIVE} is not a sweep directive: {exc}") from None

    def result_path(self) -> Path:
        return segment_result_path(Path(self.result_dir), self.segment)


def segment_result_path(result_dir: Path, segment: int) -> Path:
    return result_dir / f"segment-{int(segment)}.json"


@dataclasses.dataclass(frozen=True)
class SegmentResult:
    """How a segment ended: the iteration reached, whether the trial is done, its last result."""

    segment: int
    iteration: int
    done: bool
    result: dict[str, Any] | None
    checkpoint: str | None = None

    def write(self, path: Path) -> None:
        """Write atomically and durably (a reader sees the old file, none, or this one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(self), f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def read(cls, path: Path) -> "SegmentResult | None":
        """The result in ``path``, or None when there is none (yet)."""
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not a segment result: {exc}") from None


def plain(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays as Python values, tuples as lists, keys as
    strings, NaN and infinities as None, anything else as its ``repr``."""
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return repr(value)
