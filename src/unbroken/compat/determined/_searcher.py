"""``core.searcher``: one operation of a configured length, as Determined >= 0.38 fabricates it.

The length comes from ``core.init(searcher_length=N)``, else ``$UNBROKEN_DET_SEARCHER_LENGTH``
(set from `unbroken run --searcher-length N` or a config's ``searcher.max_length``). Progress is
reported in the operation's units and shown as a fraction; the completed metric is recorded in
the metrics group ``searcher`` at ``steps_completed = length``.

In a trial of a sweep (``$UNBROKEN_SWEEP_TRIAL``, e.g. from `unbroken sweep run --config`) the
sweep decides the length: the end of this segment (``stop_at``, an ASHA rung's budget), else the
sweep's ``stop: {training_iteration: N}`` (``searcher.max_length``). When the operation is
completed and the loop goes on, the chief tells the driver how the segment ended (the segment
result file of :mod:`unbroken.sweep.protocol`): iteration = the length, the result
``{metric: value given to report_completed}``, done once the length reached ``N`` (or the
segment had no end). The process then ends normally; a promoted trial is started again for its
next segment and resumes from its own newest checkpoint (``info.latest_checkpoint``).
"""

from __future__ import annotations

import enum
import math
from typing import Any, Iterator

from ...errors import ConfigError
from ...runtime.run import Run
from ...sweep.protocol import Directive, SegmentResult, plain
from . import _env


class Unit(enum.Enum):
    EPOCHS = "EPOCHS"
    RECORDS = "RECORDS"
    BATCHES = "BATCHES"


class SearcherMode(enum.Enum):
    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHIEF_ONLY"


class SearcherOperation:
    """Train until ``length`` units in all (absolute, so a resumed trial simply continues),
    then ``report_completed(metric)`` once."""

    def __init__(self, run: Run, length: int, is_chief: bool):
        self._run, self._length, self._is_chief = run, length, is_chief
        self._completed = False
        self._metric: Any = None

    @property
    def length(self) -> int:
        return self._length

    def report_progress(self, length: float) -> None:
        """Progress in the operation's units (``length`` of ``op.length``)."""
        self._chief_only("report_progress")
        if not isinstance(length, (int, float)) or not math.isfinite(length):
            raise ConfigError(f"op.report_progress() needs a finite number of units, not {length!r}")
        self._run.train.report_progress(min(1.0, max(0.0, length / self._length)))

    def report_completed(self, searcher_metric: Any) -> None:
        """Record the searcher metric; may be called once."""
        self._chief_only("report_completed")
        if self._completed:
            raise RuntimeError("op.report_completed() may only be called once")
        self._completed = True
        self._metric = searcher_metric
        if isinstance(searcher_metric, (int, float)) and not isinstance(searcher_metric, bool):
            self._run.train.report_metrics("searcher", self._length, {"searcher_metric": searcher_metric})
        self._run.train.report_progress(1.0)

    def _chief_only(self, what: str) -> None:
        if not self._is_chief:
            raise RuntimeError(f"op.{what}() may only be called on the chief")


class SearcherContext:
    """``core.searcher``: ``operations()`` yields one :class:`SearcherOperation`."""

    def __init__(self, run: Run, length: int | None = None, units: Unit | None = None):
        self._run = run
        self._sweep = Directive.from_env()
        swept = segment_length(self._sweep)
        self._length = swept if swept is not None else length if length is not None else _env.searcher_length()
        self._units = units

    def operations(self, searcher_mode: SearcherMode | str = SearcherMode.WorkersAskChief,
                   auto_ack: bool = True) -> Iterator[SearcherOperation]:
        """Yield the operation; raise RuntimeError if it was not completed when the loop goes on."""
        mode = SearcherMode(searcher_mode)
        dist = self._run.distributed
        if not dist.is_chief and mode is SearcherMode.ChiefOnly:
            raise RuntimeError("searcher.operations(ChiefOnly) may only be called on the chief")
        length = self._configured_length() if dist.is_chief else None
        if mode is SearcherMode.WorkersAskChief:
            length = dist.broadcast(length)
        op = SearcherOperation(self._run, length, dist.is_chief)
        yield op
        if dist.is_chief and not op._completed:
            raise RuntimeError("call op.report_completed(metric) on each searcher operation")
        if dist.is_chief and self._sweep is not None:
            report_segment(self._run, self._sweep, op.length, op._metric)

    def acknowledge_out_of_ops(self) -> None:
        """Nothing to acknowledge."""

    def get_configured_units(self) -> Unit | None:
        return self._units

    def _configured_length(self) -> int:
        if self._length is None:
            raise ConfigError(
                "searcher.operations() needs the training length: `unbroken run --searcher-length N`, "
                "searcher.max_length in the experiment config (`unbroken run --config FILE`), "
                f"${_env.ENV_SEARCHER_LENGTH}, or core.init(searcher_length=N)")
        return _env.check_length(self._length, "the searcher length")


# -- the trial of a sweep -----------------------------------------------------------------------
def segment_length(directive: Directive | None) -> int | None:
    """The length this segment of a sweep's trial trains to (None outside a sweep, or when the
    sweep sets neither a segment end nor ``stop: {training_iteration: N}``)."""
    if directive is None:
        return None
    ends = [v for v in (directive.stop_at, (directive.stop or {}).get("training_iteration")) if v is not None]
    return int(min(ends)) if ends else None


def report_segment(run: Run, directive: Directive, length: int, metric: Any) -> None:
    """Tell the sweep's driver that this segment reached ``length`` with ``metric`` (chief only).

    Waits for the checkpoint in flight first (the driver resumes the trial from it). Nothing is
    written when a stop was requested: the process exits 75 and the driver starts the segment again.
    """
    run.wait_for_saves()
    if run.preempted:
        return
    limit = (directive.stop or {}).get("training_iteration")
    done = directive.stop_at is None or (limit is not None and length >= limit)
    value = plain(metric)
    result = {directive.metric or "searcher_metric": value, "searcher_metric": value,
              "training_iteration": length, "trial_id": str(directive.trial), "done": done}
    SegmentResult(directive.segment, length, done, result, run.checkpoint.latest_checkpoint).write(
        directive.result_path())
