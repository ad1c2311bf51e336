"""The function API of a trial (Ray Tune's): ``report(metrics, checkpoint=...)`` and ``get_checkpoint()``.

Inside a function trainable (``def train(config): ...``) run by a sweep::

    ckpt = get_checkpoint()                      # None on a fresh trial
    start = load(ckpt.path) if ckpt else 0
    for i in range(start, 100):
        ...
        with tempfile.TemporaryDirectory() as d:
            save(d)
            report({"loss": loss}, checkpoint=Checkpoint.from_directory(d))

``report`` counts an iteration, commits the checkpoint (a copy of the folder) and, when the
segment is over or a stop was requested, ends the function (:class:`SegmentOver`, which is not
an ``Exception`` so that ``except Exception`` in user code lets it through).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConfigError
from . import session as session_mod

log = logging.getLogger("unbroken")


class SegmentOver(BaseException):
    """Ends a function trainable at the end of its segment (caught by the worker)."""


class Checkpoint:
    """A folder of checkpoint files (Ray's ``train.Checkpoint``)."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    @classmethod
    def from_directory(cls, path: str | Path) -> "Checkpoint":
        return cls(path)

    def to_directory(self, path: str | Path | None = None) -> str:
        target = Path(path or tempfile.mkdtemp(prefix="unbroken-ckpt-"))
        shutil.copytree(self.path, target, dirs_exist_ok=True)
        return str(target)

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        yield self.path

    def __repr__(self) -> str:
        return f"Checkpoint({self.path!r})"


def _session():
    current = session_mod.current()
    if current is None:
        raise ConfigError("report() and get_checkpoint() work inside a trial that a sweep started "
                          "(unbroken.tune.run or `unbroken sweep run`)")
    return current


def report(metrics: Mapping[str, Any] | None = None, *, checkpoint: Checkpoint | None = None, **kwargs: Any) -> None:
    """Report one iteration's metrics (a dict, or keywords as in older Tune), with an optional checkpoint."""
    s = _session()
    s.record({**(metrics or {}), **kwargs})
    if checkpoint is not None:
        s.upload(checkpoint.path)
    elif s.segment_over and not s.done and s.directive.save_at_pause:
        log.warning("unbroken: trial %s pauses at iteration %d without a checkpoint in that report; it will resume "
                    "from its last checkpoint", s.directive.trial, s.iteration)
    if s.segment_over or s.run.should_preempt():
        raise SegmentOver()


def get_checkpoint() -> Checkpoint | None:
    """The checkpoint this trial resumes from (verified, copied into a temporary folder), or None."""
    s = _session()
    found: list[Path] = []

    def load(path: Path, manifest) -> None:
        target = Path(tempfile.mkdtemp(prefix=f"unbroken-trial-{s.directive.trial}-"))
        shutil.copytree(path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MANIFEST.json"))
        found.append(target)

    s.restore_files(load)
    return Checkpoint(found[0]) if found else None
