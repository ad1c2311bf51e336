"""Metrics and progress of a run: ``run.train`` (Determined's ``core.train``).

Calls only queue (microseconds, training thread); :class:`~.metrics.MetricsWriter` writes them
into the index in the background. Bad values raise ConfigError in the caller's thread.
"""

from __future__ import annotations

from typing import Any

from .metrics import MetricsWriter


class TrainContext:
    """Report metrics and progress of one attempt."""

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
        self._writer.progress(fraction)
