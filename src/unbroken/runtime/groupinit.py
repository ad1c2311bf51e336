"""``unbroken.init()`` on the ranks of a torch.distributed group: rank 0 leads, the others follow.

Rank 0 does what a single process does (join the trial, take the writer lease unless supervised,
record the attempt, reconcile the index) and then broadcasts who the run is (:func:`lead`); the
other ranks wait for that broadcast and compose a Run over the same checkpoint store without any
index writes, lease or retention (:func:`follow`). A failure on rank 0 is broadcast too, so the
others raise instead of waiting. Every rank must call ``init()``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ..checkpoint import CheckpointStore
from ..config import resolve_cache_dir
from ..envvars import LaunchEnv
from ..errors import ConfigError
from ..storage import open_storage
from .checkpointing import CheckpointContext
from .follower import NoIndex, NoMetrics
from .grouploop import GroupPreempt, GroupStateLoop
from .loop import StateLoop
from .preempt import PreemptContext
from .run import Run
from .training import TrainContext


def make_loop(group: Any, checkpoint: CheckpointContext, train: TrainContext, preempt: PreemptContext, policy: Any,
              *, label: str, incremental: bool | None) -> StateLoop:
    """The state loop of this process: the single-process one, or one rank's of a group."""
    if group.size == 1:
        return StateLoop(checkpoint, train, preempt, policy, label=label, incremental=incremental)
    return GroupStateLoop(checkpoint, train, GroupPreempt(preempt, group), policy, label=label, group=group)


@contextlib.contextmanager
def lead(group: Any) -> Iterator[Any]:
    """Rank 0: yield ``share(run) -> run``, which tells the other ranks who the run is; a failure
    in the block is told to them instead (then re-raised). A no-op for a single process."""
    def share(run: Run) -> Run:
        if group.size > 1:
            group.broadcast({"info": run.info, "location": run.checkpoint.store.storage.location})
        return run

    try:
        yield share
    except BaseException as exc:
        if group.size > 1:
            group.broadcast({"error": f"{type(exc).__name__}: {exc}"})
        raise


def follow(group: Any, keep: Any, policy: Any, preempt_signals: Any, deadline: float | None,
           exit_on_preempt: bool) -> Run:
    """A rank other than 0: wait for rank 0's run, then compose this rank's Run (no index writes)."""
    shared = group.broadcast(None)
    if "error" in shared:
        raise ConfigError(f"rank 0 could not start the run, so rank {group.rank} stops too: {shared['error']}")
    info = shared["info"]
    storage = open_storage(shared["location"], cache_dir=resolve_cache_dir(info.home))
    store = CheckpointStore(storage, trial={"experiment": info.experiment, "trial": info.trial})
    launch = LaunchEnv.from_env()
    preempt = PreemptContext(preempt_signals, deadline if deadline is not None else launch.deadline,
                             extra_signal=launch.preempt_signal)
    label = f"trial {info.experiment}/{info.trial} rank {group.rank}"
    checkpoint = CheckpointContext(store, None, keep, label=label, group=group)
    writer = NoMetrics()
    loop = make_loop(group, checkpoint, TrainContext(writer), preempt, policy, label=label, incremental=False)
    return Run(info, checkpoint=checkpoint, preempt=loop.preempt, writer=writer, index=NoIndex(), loop=loop,
               release=lambda: None, exit_on_preempt=exit_on_preempt, distributed=group)
