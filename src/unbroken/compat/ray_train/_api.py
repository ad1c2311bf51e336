"""The functions a training function calls: ``report``, ``get_checkpoint``, ``get_context``.

They act on the worker's current :class:`~._session.Session` (set by :mod:`._worker` while the
training function runs). Called anywhere else they raise ConfigError saying so. Training thread only.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ._checkpoint import Checkpoint
from ._context import TrainContext
from ._session import Session

_current: Session | None = None


def set_session(session: Session | None) -> None:
    """Make ``session`` the one the functions below use (None: none)."""
    global _current
    _current = session


def _session(what: str) -> Session:
    if _current is None:
        raise ConfigError(f"{what} works inside train_loop_per_worker while TorchTrainer.fit() runs it "
                          "(from unbroken.compat.ray_train.torch import TorchTrainer)")
    return _current


def report(metrics: dict[str, Any], *, checkpoint: Checkpoint | None = None,
           checkpoint_dir_name: str | None = None) -> None:
    """Report ``metrics`` (rank 0's are kept) and optionally a checkpoint, as one collective of all workers.

    Every worker must call it the same number of times. With a checkpoint (from any worker), the
    files of every worker's checkpoint folder are committed as one verified unbroken checkpoint,
    for all workers or for none, before this returns. ``checkpoint_dir_name`` is accepted and
    ignored (unbroken names checkpoints by uuid).
    """
    _session("report()").report(metrics, checkpoint)


def get_checkpoint() -> Checkpoint | None:
    """The newest checkpoint of this run (to resume from), or None on a fresh start."""
    return _session("get_checkpoint()").latest


def get_context() -> TrainContext:
    """Who this worker is: ranks, world sizes, experiment and trial names."""
    return _session("get_context()").context


def current_session() -> Session | None:
    """The worker's session, or None outside a training function."""
    return _current
