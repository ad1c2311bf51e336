"""Determined's ``det.core``: ``with core.init() as core_context: ...``.

Change ``from determined import core`` to ``from unbroken.compat.determined import core``; the
program then runs under `unbroken run` (restarts, resume, stop requests, history) or on its own.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...runtime.run import Run
from . import _session
from ._contexts import (CheckpointContext, DistributedContext, PreemptContext, PreemptMode, TrainContext,
                        check_distributed)
from ._info import ClusterInfo, info_of
from ._searcher import SearcherContext, SearcherMode, SearcherOperation, Unit
from .expconf import storage_location


class Context:
    """The core context: ``checkpoint``, ``train``, ``preempt``, ``searcher``, ``distributed``, ``info``.

    Leaving the ``with`` block (or :meth:`close`) closes the run: it waits for the metrics, records
    how the attempt ended and, when the training stopped for a stop request, exits with status 75.
    """

    def __init__(self, run: Run, *, preempt_mode: PreemptMode | str = PreemptMode.WorkersAskChief,
                 searcher_length: int | None = None, info: ClusterInfo | None = None):
        self.run = run
        self.checkpoint = CheckpointContext(run)
        self.train = TrainContext(run)
        self.preempt = PreemptContext(run, preempt_mode)
        self.searcher = SearcherContext(run, searcher_length)
        self.distributed = DistributedContext(run.distributed)
        self.info = info or info_of(run)

    def start(self) -> None:
        """Nothing to start: the run is open from :func:`init` on."""

    def close(self, exc: BaseException | None = None) -> None:
        _session.close_session(exc)

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)


def init(*, distributed: Any = None, checkpoint_storage: str | dict | None = None,
         preempt_mode: PreemptMode | str = PreemptMode.WorkersAskChief, tensorboard_mode: Any = None,
         async_checkpointing: bool = False, searcher_length: int | None = None,
         name: str | None = None, hparams: dict[str, Any] | None = None) -> Context:
    """Open the trial and return its :class:`Context` (use it as a context manager).

    Under `unbroken run` it joins the supervisor's trial. Otherwise the experiment is ``name``,
    else the script's name. ``checkpoint_storage`` (a folder, ``s3://...``, or Determined's
    ``{"type": "shared_fs" | "s3", ...}``) chooses where a new trial keeps its checkpoints.
    ``distributed``: None, or ``DistributedContext.from_torch_distributed()`` under torchrun (every
    rank calls ``init``; the run joins the torch.distributed group either way). ``tensorboard_mode``
    and ``async_checkpointing`` are accepted and ignored.
    """
    run = open_run(distributed, name=name, hparams=hparams, storage=storage_location(checkpoint_storage))
    return Context(run, preempt_mode=preempt_mode, searcher_length=searcher_length)


def open_run(distributed: Any, **session: Any) -> Run:
    """The process's Run (see :func:`_session.open_session`), closed again if ``distributed`` disagrees with it."""
    run = _session.open_session(**session)
    try:
        check_distributed(distributed, run)
    except ConfigError:
        _session.close_session()
        raise
    return run


__all__ = ["CheckpointContext", "ClusterInfo", "Context", "DistributedContext", "PreemptContext", "PreemptMode",
           "SearcherContext", "SearcherMode", "SearcherOperation", "TrainContext", "Unit", "init"]
