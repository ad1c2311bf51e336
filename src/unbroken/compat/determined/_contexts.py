"""Determined's ``core.checkpoint``, ``core.train``, ``core.preempt`` and ``core.distributed`` over an
unbroken Run.

Each is a thin adapter: the signatures are Determined's, the behaviour unbroken's (atomic,
verified checkpoints; metrics in the index; stop requests from signals and deadlines).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from ...errors import ConfigError
from ...runtime.run import Run

log = logging.getLogger("unbroken")


class CheckpointContext:
    """``core.checkpoint``: ``storage_id`` is the checkpoint's uuid.

    ``shard=True``: every worker calls ``store_path``/``upload`` (a collective) and writes its own
    files into the one checkpoint, committed once every worker finished; with ``shard=False`` only
    the chief may call them. ``selector`` and ``download_mode`` are accepted and ignored (every file
    is verified and read).
    """

    def __init__(self, run: Run):
        self._run = run
        self._dist = run.distributed

    @contextlib.contextmanager
    def store_path(self, metadata: dict[str, Any], shard: bool = False) -> Iterator[tuple[Path, str]]:
        """Yield ``(path, storage_id)``; the files under ``path`` are committed atomically when the
        block ends (``metadata`` needs ``steps_completed``); nothing is saved if it raises."""
        with self._run.checkpoint.store_path(metadata, shard=shard) as (path, uuid):
            yield path, uuid

    @contextlib.contextmanager
    def restore_path(self, storage_id: str, selector: Any = None) -> Iterator[Path]:
        """Yield the verified local folder of checkpoint ``storage_id`` (read-only, leased)."""
        with self._run.checkpoint.restore_path(storage_id) as path:
            yield path

    def upload(self, ckpt_dir: str | Path | None, metadata: dict[str, Any], *, shard: bool = False,
               selector: Any = None) -> str:
        """Copy folder ``ckpt_dir`` into a new checkpoint; return its storage_id (with ``shard=True``
        every worker calls it, those with nothing to add with ``ckpt_dir=None``)."""
        return self._run.checkpoint.upload(ckpt_dir, metadata, shard=shard)

    def download(self, storage_id: str, ckpt_dir: str | Path, download_mode: Any = None,
                 *, selector: Any = None) -> None:
        """Verify checkpoint ``storage_id`` and copy its files into ``ckpt_dir``."""
        self._run.checkpoint.download(storage_id, ckpt_dir)

    def get_metadata(self, storage_id: str) -> dict[str, Any]:
        """The metadata given when checkpoint ``storage_id`` was stored (with steps_completed)."""
        return self._run.checkpoint.get_metadata(storage_id)

    def delete(self, storage_id: str, globs: list[str] | None = None) -> None:
        """Delete checkpoint ``storage_id`` (whole checkpoints only: ``globs`` must be empty)."""
        if globs:
            raise ConfigError("checkpoint.delete(globs=...) is not supported: checkpoints are deleted whole "
                              "(a partial checkpoint would no longer verify)")
        self._run.checkpoint.delete(storage_id)


class TrainContext:
    """``core.train``: metrics go to the index (``unbroken show``, ``unbroken metrics``)."""

    def __init__(self, run: Run):
        self._train = run.train

    def report_training_metrics(self, steps_completed: int, metrics: dict[str, Any],
                                batch_metrics: Any = None) -> None:
        self._train.report_training_metrics(steps_completed, metrics)

    def report_validation_metrics(self, steps_completed: int, metrics: dict[str, Any]) -> None:
        self._train.report_validation_metrics(steps_completed, metrics)

    def report_metrics(self, group: str, steps_completed: int, metrics: dict[str, Any]) -> None:
        self._train.report_metrics(group, steps_completed, metrics)

    def report_progress(self, progress: float) -> None:
        """Progress in [0, 1]."""
        self._train.report_progress(progress)

    def get_experiment_best_validation(self) -> float | None:
        """Not tracked across trials by unbroken: always None."""
        return None

    def set_status(self, status: str) -> None:
        """Logged only (unbroken's trial status is what happened to the process)."""
        log.info("unbroken: status: %s", status)


class PreemptMode(enum.Enum):
    """Who asks whether to stop: the chief (and tells the workers), the chief only, or every worker."""

    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHIEF_ONLY"
    WorkersAskMaster = "WORKERS_ASK_MASTER"


class PreemptContext:
    """``core.preempt``: True once a stop was requested (SIGTERM, the preempt signal, a deadline,
    a spot notice forwarded by `unbroken run`). Save, then return from training: the process then
    exits 75 and the supervisor resumes it later.

    Modes: ``WorkersAskChief`` (default) - every process calls it in step (a collective) and all
    get the same answer: stop once any process was asked to (the supervisor signals every rank);
    ``ChiefOnly`` - only the chief may call it; ``WorkersAskMaster`` - every process asks its own
    signals.
    """

    def __init__(self, run: Run, mode: PreemptMode | str = PreemptMode.WorkersAskChief):
        self._preempt = run.preempt
        self._dist = run.distributed
        self.mode = PreemptMode(mode)

    def should_preempt(self, auto_ack: bool = True) -> bool:
        if self.mode is PreemptMode.WorkersAskChief:
            return self._preempt.agree()
        if not self._dist.is_chief and self.mode is PreemptMode.ChiefOnly:
            raise RuntimeError("should_preempt() in ChiefOnly mode may only be called on the chief")
        return self._preempt.own_request() is not None

    def acknowledge_preemption_signal(self) -> None:
        """Nothing to acknowledge: the supervisor learns of the stop from the exit status."""


class DistributedContext:
    """``core.distributed`` over the run's distributed context (rank, size, broadcast, gather).

    ``DistributedContext.from_torch_distributed()`` (what a Determined script passes to
    ``core.init(distributed=...)`` under torchrun) reads this process's place from torchrun's
    environment; the context that ``core.init`` returns then uses the run's own group, which
    ``unbroken.init`` joins (initialising torch.distributed from the environment if the script did not).
    """

    def __init__(self, dist: Any):
        self._dist = dist

    @classmethod
    def from_torch_distributed(cls, chief_ip: str | None = None) -> "DistributedContext":
        """This process's rank and size from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
        return cls(_FromEnvironment())

    @classmethod
    def from_horovod(cls, *args: Any, **kwargs: Any) -> "DistributedContext":
        raise ConfigError("Horovod is not supported: launch the ranks with torchrun (unbroken run --nproc-per-node N) "
                          "and use DistributedContext.from_torch_distributed()")

    from_deepspeed = from_horovod

    @property
    def rank(self) -> int:
        return self._dist.rank

    @property
    def size(self) -> int:
        return self._dist.size

    @property
    def local_rank(self) -> int:
        return self._dist.local_rank

    @property
    def local_size(self) -> int:
        return getattr(self._dist, "local_size", self._dist.size)

    @property
    def cross_rank(self) -> int:
        return getattr(self._dist, "cross_rank", 0)

    @property
    def cross_size(self) -> int:
        return getattr(self._dist, "cross_size", 1)

    def get_rank(self) -> int:
        return self.rank

    def get_size(self) -> int:
        return self.size

    def get_local_rank(self) -> int:
        return self.local_rank

    def get_local_size(self) -> int:
        return self.local_size

    def broadcast(self, stuff: Any) -> Any:
        return self._dist.broadcast(stuff)

    def allgather(self, stuff: Any) -> list[Any]:
        return self._dist.allgather(stuff)

    def gather(self, stuff: Any) -> list[Any] | None:
        """Every rank's value on the chief, None elsewhere."""
        values = self._dist.allgather(stuff)
        return values if self._dist.is_chief else None

    def close(self) -> None:
        """Nothing to close: the run owns the process group."""


class _FromEnvironment:
    """A process's place in a torchrun group before the run opens (no collectives yet)."""

    def __init__(self, environ: Any = None):
        env = os.environ if environ is None else environ
        self.rank = int(env.get("RANK", "0"))
        self.size = int(env.get("WORLD_SIZE", "1"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        self.local_size = int(env.get("LOCAL_WORLD_SIZE", str(self.size)))
        self.cross_rank = int(env.get("GROUP_RANK", "0"))
        self.cross_size = max(1, self.size // max(1, self.local_size))

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def _no_collectives(self, *args: Any) -> Any:
        raise ConfigError("this DistributedContext is only a request: pass it to core.init(distributed=...) and use "
                          "the context's .distributed for collectives")

    broadcast = allgather = barrier = _no_collectives


def check_distributed(requested: Any, run: Run) -> None:
    """``core.init(distributed=...)``: None, or a DistributedContext agreeing with the run's group."""
    if requested is None:
        return
    if not isinstance(requested, DistributedContext):
        raise ConfigError(f"core.init(distributed=...) takes core.DistributedContext.from_torch_distributed(), "
                          f"not {type(requested).__name__}")
    if (requested.rank, requested.size) != (run.distributed.rank, run.distributed.size):
        raise ConfigError(f"core.init(distributed=...): the context says rank {requested.rank} of {requested.size}, "
                          f"but this process is rank {run.distributed.rank} of {run.distributed.size} "
                          "(launch with torchrun, or `unbroken run --nproc-per-node N`)")
