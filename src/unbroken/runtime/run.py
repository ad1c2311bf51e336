"""``unbroken.init()`` and the Run it returns: the one object training code talks to.

A Run joins (or creates) an experiment and trial by name, records this process as an attempt,
and composes one context per concern, as Determined's core API does:

* ``run.checkpoint`` - store/restore/list checkpoints (:mod:`.checkpointing`);
* ``run.train``      - metrics and progress (:class:`TrainContext`);
* ``run.preempt``    - stop requests from signals and deadlines (:mod:`.preempt`);
* ``run.info``       - who and where this run is (:class:`RunInfo`).

On top sit the high-level helpers ``restore``/``save``/``maybe_save``/``steps``/``report``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from ..checkpoint.saving import statefile
from ..checkpoint import CheckpointStore, RetentionPolicy, State, keep_latest
from ..checkpoint.saving.saver import Saver
from ..checkpoint.io.writer import SaveHandle
from ..config import (ENV_ATTEMPT, ENV_EXPERIMENT, ENV_TRIAL, EXIT_PREEMPTED, check_name, resolve_home,
                      trial_dir)
from ..errors import BackgroundSaveError, ConfigError, CorruptCheckpoint
from ..storage import LocalStorage
from ..tracking import Tracker
from .checkpointing import CheckpointContext
from .metrics import MetricsWriter
from .policy import SavePolicy, every_seconds
from .preempt import PreemptContext

log = logging.getLogger("unbroken")

DEFAULT_SAVE_POLICY = every_seconds(600)
DEFAULT_RETENTION = keep_latest(3)


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


class TrainContext:
    """Metrics and progress of a run (``run.train``)."""

    def __init__(self, writer: MetricsWriter):
        self._writer = writer

    def report_training_metrics(self, steps_completed: int, metrics: dict[str, Any]) -> None:
        self._writer.put("training", steps_completed, metrics)

    def report_validation_metrics(self, steps_completed: int, metrics: dict[str, Any]) -> None:
        self._writer.put("validation", steps_completed, metrics)

    def report_metrics(self, group: str, steps_completed: int, metrics: dict[str, Any]) -> None:
        self._writer.put(group, steps_completed, metrics)

    def report_progress(self, fraction: float) -> None:
        """Report progress in [0, 1] (shown by the CLI and dashboard)."""
        if not 0.0 <= float(fraction) <= 1.0:
            raise ConfigError(f"progress must be between 0 and 1, not {fraction!r}")
        self._writer.progress(fraction)


class Run:
    """A training process's handle on its trial. Use as a context manager; see :func:`init`."""

    def __init__(self, info: RunInfo, tracker: Tracker, checkpoint: CheckpointContext, preempt: PreemptContext,
                 writer: MetricsWriter, save_policy: SavePolicy, exit_on_preempt: bool):
        self.info, self.checkpoint, self.preempt = info, checkpoint, preempt
        self.train = TrainContext(writer)
        self._tracker, self._writer = tracker, writer
        self.save_policy = save_policy
        self.exit_on_preempt = exit_on_preempt
        self._state: State | None = None
        self._last_save_steps = -1
        self._last_save_time = time.monotonic()
        self._loop_finished = False
        self._stopped_for_preemption = False
        self._closed = False
        self._saver: Saver | None = None  # created by the first save
        self._last_progress = 0.0

    # -- identity ------------------------------------------------------------------------------
    @property
    def hparams(self) -> dict[str, Any]:
        return self.info.hparams

    @property
    def latest_checkpoint(self) -> str | None:
        return self.checkpoint.latest_checkpoint

    def should_preempt(self) -> bool:
        return self.preempt.should_preempt()

    @property
    def preempted(self) -> bool:
        """True once the run stopped (or must stop) because of a stop request."""
        return self._stopped_for_preemption or (not self._loop_finished and self.preempt.should_preempt())

    # -- high-level state API ------------------------------------------------------------------
    def restore(self, state: State, *, allow_pickle: bool = False, strict: bool = True) -> int:
        """Load the newest good checkpoint into ``state``; return its ``steps_completed`` (0 if none).

        A checkpoint that fails verification is reported (CorruptCheckpointWarning, marked corrupt
        in the index) and the next-newest is tried; ``state`` is untouched by a corrupt one.
        ``state`` becomes the run's state, saved by :meth:`steps` and at preemption.
        """
        self._state = state
        self.wait_for_saves()
        for manifest in self.checkpoint.candidates():
            directory = self.checkpoint.store.local_path(manifest.uuid)
            try:
                statefile.restore(state, directory, manifest, allow_pickle=allow_pickle, strict=strict)
            except CorruptCheckpoint as exc:
                self.checkpoint.report_corrupt(manifest.uuid, str(exc))
                continue
            self.checkpoint.store.mark_verified(manifest.uuid)
            self._last_save_steps = manifest.steps_completed
            self._tracker.update_attempt(self.info.attempt_id, restored_uuid=manifest.uuid,
                                         restored_steps=manifest.steps_completed)
            log.info("unbroken: %s resumed from checkpoint %s at step %d", self._ref, manifest.uuid,
                     manifest.steps_completed)
            self._prepare_saves(state)
            return manifest.steps_completed
        log.info("unbroken: %s starts from scratch (no checkpoint)", self._ref)
        self._prepare_saves(state)
        return 0

    def save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None,
             metadata: dict[str, Any] | None = None, wait: bool = False) -> str:
        """Checkpoint ``state`` as of ``steps_completed``; return the new checkpoint's uuid.

        Asynchronous by default: it returns once every tensor is copied into a reusable host
        buffer and the rest of the state is encoded (training may then change ``state``
        freely); a background thread writes, checksums and commits the checkpoint (then records
        it and applies retention). At most one save is in flight: a save first waits for the
        previous one. ``wait=True`` returns only once the checkpoint is committed;
        :meth:`wait_for_saves` waits for the one in flight.

        A background failure (disk full, ...) commits nothing, leaves earlier checkpoints
        intact and is raised as :class:`~unbroken.errors.BackgroundSaveError` by the next
        ``save``/``maybe_save``/step of :meth:`steps`/``wait_for_saves`` and when the run
        closes. Reports ``stall_s``, ``wait_s``, then ``save_s`` and ``bytes`` in the metrics
        group ``checkpoint``.
        """
        meta = {**(metadata or {}), **({"metrics": _plain_metrics(metrics)} if metrics else {})}
        handle = self._saves.save(state, steps_completed, meta, wait=wait)
        self._last_save_steps = steps_completed
        self._last_save_time = time.monotonic()
        self.train.report_metrics("checkpoint", steps_completed, {"stall_s": handle.stall_s, "wait_s": handle.wait_s})
        return handle.uuid

    def wait_for_saves(self) -> None:
        """Block until the save in flight (if any) is committed; raise BackgroundSaveError if it failed."""
        if self._saver is not None:
            self._saver.wait()

    @property
    def _saves(self) -> Saver:
        if self._saver is None:
            checkpoint = self.checkpoint
            self._saver = Saver(
                checkpoint.store,
                commit=lambda pending, steps, meta, written: checkpoint.commit(
                    pending, steps, meta, known=written.entries, needs_pickle=written.needs_pickle),
                on_committed=self._on_committed)
        return self._saver

    def _prepare_saves(self, state: State) -> None:
        """Fault in the snapshot buffer in the background now, not during the first save."""
        try:
            self._saves.prepare(state)
        except Exception as exc:  # noqa: BLE001 - an optimisation; the save itself reports real problems
            log.debug("unbroken: could not prepare the snapshot buffer: %s", exc)

    def _on_committed(self, handle: SaveHandle) -> None:
        self.train.report_metrics("checkpoint", handle.steps_completed, {"save_s": handle.save_s, "bytes": handle.nbytes})

    def maybe_save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None) -> str | None:
        """Save if the save policy says so (or a stop was requested); return the uuid or None.

        Raises BackgroundSaveError if an earlier background save failed.
        """
        if self._saver is not None:
            self._saver.check()
        elapsed = time.monotonic() - self._last_save_time
        if self.preempt.should_preempt() and steps_completed > self._last_save_steps:
            return self.save(state, steps_completed, metrics=metrics)
        if self.save_policy.due(steps_completed, self._last_save_steps, elapsed):
            return self.save(state, steps_completed, metrics=metrics)
        return None

    def steps(self, start: int, total: int | None = None, *, state: State | None = None) -> Iterator[int]:
        """Yield step indices ``start, start + 1, ...`` (up to ``total``), saving at boundaries.

        After each step the save policy may checkpoint ``state`` (default: the one given to
        :meth:`restore`). When a stop is requested the iterator saves the state at the
        boundary and ends; the run then exits "preempted". At the end of the loop it saves
        once more, so a completed trial's final state is always committed.
        """
        state = state if state is not None else self._state
        step = start
        while total is None or step < total:
            if self.preempt.should_preempt():
                self._stop_for_preemption(state, step)
                return
            yield step
            step += 1
            self._after_step(state, step, total)
        if state is not None and step > self._last_save_steps:
            self.save(state, step)
        if total:
            self.train.report_progress(1.0)
        self._loop_finished = True

    def _after_step(self, state: State | None, steps_completed: int, total: int | None) -> None:
        if state is not None:
            self.maybe_save(state, steps_completed)
        now = time.monotonic()
        if total and now - self._last_progress > 2.0:
            self._last_progress = now
            self.train.report_progress(min(1.0, steps_completed / total))

    def _stop_for_preemption(self, state: State | None, steps_completed: int) -> None:
        if state is not None and steps_completed > self._last_save_steps:
            self.save(state, steps_completed, wait=True)  # committed before the process may exit
        self.wait_for_saves()
        self._stopped_for_preemption = True
        log.warning("unbroken: %s stopping at step %d (%s); state saved", self._ref, steps_completed,
                    self.preempt.reason)

    # -- metrics -------------------------------------------------------------------------------
    def report(self, steps_completed: int, group: str = "training", **metrics: Any) -> None:
        """Report metrics for a step (queued; written in the background)."""
        self.train.report_metrics(group, steps_completed, metrics)

    def report_progress(self, fraction: float) -> None:
        self.train.report_progress(fraction)

    # -- end -------------------------------------------------------------------------------------
    def close(self, exc: BaseException | None = None) -> str:
        """Wait for the save in flight, flush metrics, record how the attempt ended, restore signal
        handlers. Returns the end reason.

        Raises BackgroundSaveError (after all of that) if a background save failed and the
        run was otherwise ending without an error.
        """
        if self._closed:
            return "closed"
        self._closed = True
        save_error = self._finish_saves()
        reason, message = self._outcome(exc if exc is not None else save_error)
        self._writer.close()
        self.preempt.uninstall()
        if not self.info.supervised or reason != "crashed":
            self._tracker.end_attempt(self.info.attempt_id, reason, message=message,
                                      overwrite=not self.info.supervised)
        status = {"completed": "completed", "preempted": "preempted", "cancelled": "cancelled"}.get(reason, "crashed")
        if not self.info.supervised:
            self._tracker.update_trial(self.info.trial_id, status=status, message=message)
        self._tracker.close()
        if save_error is not None and exc is None:
            raise save_error
        return reason

    def _finish_saves(self) -> BackgroundSaveError | None:
        try:
            self.wait_for_saves()
        except BackgroundSaveError as error:  # logged by the writer when it happened
            return error
        return None

    def _outcome(self, exc: BaseException | None) -> tuple[str, str | None]:
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            if self.preempted:
                return "preempted", f"stopped on {self.preempt.reason}"
            return "completed", None
        if isinstance(exc, KeyboardInterrupt):
            return "cancelled", "KeyboardInterrupt"
        if isinstance(exc, SystemExit) and exc.code == EXIT_PREEMPTED:
            return "preempted", f"stopped on {self.preempt.reason}"
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return "crashed", last[:2000]

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        reason = self.close(exc)
        if exc is None and reason == "preempted" and self.exit_on_preempt:
            sys.stdout.flush()
            raise SystemExit(EXIT_PREEMPTED)

    @property
    def _ref(self) -> str:
        return f"trial {self.info.experiment}/{self.info.trial}"


def init(name: str | None = None, *, hparams: dict[str, Any] | None = None, home: str | os.PathLike | None = None,
         fresh: bool = False, save: SavePolicy | None = None, keep: RetentionPolicy | None = None,
         preempt_signals: list[str | int] | None = None, deadline: float | None = None,
         exit_on_preempt: bool = True) -> Run:
    """Join (or create) the trial of experiment ``name`` and record this process as an attempt.

    * ``name``: the experiment; taken from ``$UNBROKEN_EXPERIMENT`` under ``unbroken run``.
      Rerunning with the same name resumes its newest trial; ``fresh=True`` starts a new trial.
    * ``hparams``: JSON-able hyperparameters, fixed per trial (a rerun with other values is an
      error unless ``fresh=True``). ``run.hparams`` gives them back.
    * ``home``: where checkpoints and the index live (default ``$UNBROKEN_HOME`` or ~/.unbroken).
    * ``save``: when ``run.steps()`` checkpoints (default every 10 minutes); ``keep``: retention
      (default the latest 3).
    * ``preempt_signals``: signals that request a stop (default TERM, INT and
      ``$UNBROKEN_PREEMPT_SIGNAL`` or USR2); ``deadline``: a Unix time at which to stop.
    * ``exit_on_preempt``: leaving the ``with`` block after a stop raises
      ``SystemExit(75)`` (EXIT_PREEMPTED) so a supervisor can tell it from a crash.
    """
    _default_logging()
    home_path = resolve_home(home)
    experiment = check_name(name or os.environ.get(ENV_EXPERIMENT) or _missing_name())
    tracker = Tracker.in_home(home_path)
    supervised = bool(os.environ.get(ENV_TRIAL)) and os.environ.get(ENV_EXPERIMENT) in (None, experiment)
    trial = _join_trial(tracker, home_path, experiment, hparams, fresh, supervised)
    if supervised and os.environ.get(ENV_ATTEMPT):
        attempt = tracker.attempt(int(os.environ[ENV_ATTEMPT]))
        tracker.update_attempt(attempt.id, pid=os.getpid())
    else:
        tracker.close_lost_attempts(trial.id)
        attempt = tracker.start_attempt(trial.id)
    tdir = trial_dir(home_path, experiment, trial.number)
    store = CheckpointStore(LocalStorage(tdir / "checkpoints"), trial={"experiment": experiment, "trial": trial.number})
    store.clean_stale()
    info = RunInfo(experiment, trial.number, trial.id, attempt.id, attempt.number, trial.hparams, home_path, tdir,
                   supervised)
    preempt = PreemptContext(preempt_signals, deadline)
    preempt.install()
    checkpoint = CheckpointContext(store, tracker, trial.id, attempt.id, keep or DEFAULT_RETENTION)
    writer = MetricsWriter(tracker, trial.id, attempt.id)
    return Run(info, tracker, checkpoint, preempt, writer, save or DEFAULT_SAVE_POLICY, exit_on_preempt)


def _join_trial(tracker: Tracker, home: Path, experiment: str, hparams: dict | None, fresh: bool, supervised: bool):
    storage_of = lambda number: trial_dir(home, experiment, number) / "checkpoints"  # noqa: E731
    if supervised:
        trial = tracker.trial(experiment, int(os.environ[ENV_TRIAL]))
    elif fresh:
        return tracker.create_trial(experiment, hparams=hparams, storage_of=storage_of)
    else:
        try:
            trial = tracker.trial(experiment)
        except LookupError:
            return tracker.create_trial(experiment, hparams=hparams, storage_of=storage_of)
    if hparams is not None and _normal(hparams) != _normal(trial.hparams):
        if supervised and not trial.hparams:
            tracker.update_trial(trial.id, hparams=hparams)
            return tracker.trial_by_id(trial.id)
        raise ConfigError(
            f"trial {trial.ref} was started with hparams {trial.hparams}, not {hparams}: pass the same "
            "hparams to resume it, or fresh=True (`unbroken run --fresh`) to start a new trial"
        )
    return trial


def _normal(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _missing_name() -> str:
    raise ConfigError("unbroken.init() needs a name: init(name='my-experiment'), or run under `unbroken run`")


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}


def _default_logging() -> None:
    """Show unbroken's INFO messages on stderr unless the application configured logging."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
