"""The Run that ``unbroken.init()`` returns: a thin root composing one context per concern.

As in Determined's core API:

* ``run.checkpoint``  - store/restore/list checkpoints (:mod:`.checkpointing`);
* ``run.train``       - metrics and progress (:mod:`.training`);
* ``run.preempt``     - stop requests from signals and deadlines (:mod:`.preempt`);
* ``run.distributed`` - rank, size, chief, collectives (:mod:`.distributed`; a torch.distributed
  group is detected by ``init()``: see :mod:`.groupinit`);
* ``run.info``        - who and where this run is (:class:`RunInfo`).

On top sit the high-level helpers ``restore``/``save``/``maybe_save``/``steps``/``report``
(:mod:`.loop`). Closing the run (leaving the ``with`` block) waits for the save in flight,
flushes metrics, records how the attempt ended (:mod:`.index`) and releases the trial.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from ..checkpoint import State
from ..config import EXIT_PREEMPTED
from .checkpointing import CheckpointContext
from .distributed import SingleProcess
from .index import RunIndex
from .loop import StateLoop
from .metrics import MetricsWriter
from .outcome import classify
from .preempt import PreemptContext


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Identity of a run: experiment, trial, attempt, hyperparameters, folders."""

    experiment: str
    trial: int
    trial_id: int
    attempt_id: int
    attempt: int
    hparams: dict[str, Any]
    home: Path
    trial_dir: Path
    supervised: bool


class Run:
    """A training process's handle on its trial. Use as a context manager; see :func:`unbroken.init`.

    Threads: use it from the training thread (the main thread for signal handling).
    """

    def __init__(self, info: RunInfo, *, checkpoint: CheckpointContext, preempt: PreemptContext,
                 writer: MetricsWriter, index: RunIndex, loop: StateLoop, release: Callable[[], None],
                 exit_on_preempt: bool, distributed: Any = None):
        self.info, self.checkpoint, self.preempt = info, checkpoint, preempt
        self.train = loop.train
        self.distributed = distributed if distributed is not None else SingleProcess()
        self._writer, self._index, self._loop = writer, index, loop
        self._release = release
        self.exit_on_preempt = exit_on_preempt
        self._closed = False

    # -- identity ------------------------------------------------------------------------------
    @property
    def hparams(self) -> dict[str, Any]:
        return self.info.hparams

    @property
    def latest_checkpoint(self) -> str | None:
        return self.checkpoint.latest_checkpoint

    @property
    def save_policy(self):
        return self._loop.policy

    def should_preempt(self) -> bool:
        return self.preempt.should_preempt()

    @property
    def preempted(self) -> bool:
        """True once the run stopped (or must stop) because of a stop request."""
        loop = self._loop
        return loop.stopped_for_preemption or (not loop.loop_finished and self.preempt.reason is not None)

    # -- high-level state API ------------------------------------------------------------------
    def restore(self, state: State, *, allow_pickle: bool = False, strict: bool = True) -> int:
        """Load the newest good checkpoint into ``state``; return its ``steps_completed`` (0 if none).

        A checkpoint that fails verification is reported (CorruptCheckpointWarning, marked corrupt
        in the index) and the next-newest is tried; ``state`` is untouched by a corrupt one.
        ``state`` becomes the run's state, saved by :meth:`steps` and at preemption.
        """
        return self._loop.restore(state, allow_pickle=allow_pickle, strict=strict)

    def save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None,
             metadata: dict[str, Any] | None = None, wait: bool = False) -> str:
        """Checkpoint ``state`` as of ``steps_completed``; return the new checkpoint's uuid.

        Asynchronous by default: it returns once every tensor is copied into a reusable host
        buffer and the rest of the state is encoded (training may then change ``state``
        freely); a background thread writes, checksums and commits the checkpoint (then records
        it and applies retention). At most one save is in flight: a save first waits for the
        previous one. ``wait=True`` returns only once the checkpoint is committed;
        :meth:`wait_for_saves` waits for the one in flight. A bad ``steps_completed`` (not an
        int in [0, 2**63)) raises ConfigError before anything is written.

        A background failure (disk full, ...) commits nothing, leaves earlier checkpoints
        intact and is raised as :class:`~unbroken.errors.BackgroundSaveError` by the next
        ``save``/``maybe_save``/step of :meth:`steps`/``wait_for_saves`` and when the run
        closes. Reports ``stall_s``, ``wait_s``, then ``save_s`` and ``bytes`` in the metrics
        group ``checkpoint``.
        """
        return self._loop.save(state, steps_completed, metrics=metrics, metadata=metadata, wait=wait)

    def maybe_save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None) -> str | None:
        """Save if the save policy says so (or a stop was requested); return the uuid or None.

        Raises BackgroundSaveError if an earlier background save failed.
        """
        return self._loop.maybe_save(state, steps_completed, metrics=metrics)

    def wait_for_saves(self) -> None:
        """Block until the save in flight (if any) is committed; raise BackgroundSaveError if it failed."""
        self._loop.wait_for_saves()

    def steps(self, start: int, total: int | None = None, *, state: State | None = None) -> Iterator[int]:
        """Yield step indices ``start, start + 1, ...`` (up to ``total``), saving at boundaries.

        After each step the save policy may checkpoint ``state`` (default: the one given to
        :meth:`restore`). When a stop is requested the iterator saves the state at the
        boundary and ends; ``run.preempted`` is then True and the run exits "preempted" when
        the ``with`` block ends. At the end of the loop it saves once more, so a completed
        trial's final state is always committed.
        """
        return self._loop.steps(start, total, state=state)

    # -- metrics -------------------------------------------------------------------------------
    def report(self, steps_completed: int, group: str = "training", **metrics: Any) -> None:
        """Report metrics for a step (queued; written in the background)."""
        self.train.report_metrics(group, steps_completed, metrics)

    def report_progress(self, fraction: float) -> None:
        self.train.report_progress(fraction)

    # -- end -------------------------------------------------------------------------------------
    def close(self, exc: BaseException | None = None) -> str:
        """Wait for the save in flight, flush metrics, record how the attempt ended, put the signal
        handlers back and release the trial. Returns the end reason.

        Never fails because of the index (its failures are warnings). Raises
        BackgroundSaveError (after all of that) if a background save failed and the run was
        otherwise ending without an error.
        """
        if self._closed:
            return "closed"
        self._closed = True
        save_error = self._loop.finish_saves()
        reason, message = classify(exc if exc is not None else save_error, self.preempted, self.preempt.reason)
        self._writer.close()
        self.preempt.uninstall()
        self._index.end(reason, message)
        self._index.close()
        self._release()
        if save_error is not None and exc is None:
            raise save_error
        return reason

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        reason = self.close(exc)
        if exc is None and reason == "preempted" and self.exit_on_preempt:
            sys.stdout.flush()
            raise SystemExit(EXIT_PREEMPTED)
