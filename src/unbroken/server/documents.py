"""The JSON documents of the API: the CLI's ``--json`` shapes, built from the CLI's own shape
functions, plus what only the dashboard needs (a runs row, the attempts' restart markers).

* :func:`experiments_document` is the document of ``unbroken ls --json`` (the click command
  builds it inline; this is the same construction as a pure function, on ``trial_json``).
* :func:`trial_document` is that of ``unbroken show --json``: ``trial_json``, ``attempt_json``,
  and the metrics summary computed from cached statistics (:class:`columns.Stat`) instead of
  reading every point (equal to ``summary_json(summaries(...))``, which ``tests/server`` checks).
* :func:`checkpoints_document` is that of ``unbroken checkpoints --json`` (without ``--verify``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cli._checks import entries
from ..cli._resolve import trial_target
from ..cli._shapes import attempt_json, trial_json
from ..cli.checkpoints import _checkpoint_json
from ..tracking import Attempt, Tracker, Trial
from .columns import Stat, Stats


def experiments_document(tracker: Tracker | None, home: Path) -> dict[str, Any]:
    """``{"home", "experiments": [{"name", "created_at", "trials": [TRIAL]}]}`` (``ls --json``)."""
    if tracker is None:
        return {"home": str(home), "experiments": []}
    by_experiment: dict[str, list[Trial]] = {}
    for trial in tracker.trials():
        by_experiment.setdefault(trial.experiment, []).append(trial)
    return {"home": str(home), "experiments": [
        {"name": e.name, "created_at": e.created_at,
         "trials": [trial_json(tracker, t) for t in by_experiment.get(e.name, [])]}
        for e in tracker.experiments()]}


def metrics_summary(stats: dict[tuple[str, str], Stat]) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``metrics`` object of ``show --json`` from a trial's statistics."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (group, name), s in sorted(stats.items()):
        out.setdefault(group, {})[name] = {"steps_completed": s.steps_completed, "value": s.value, "min": s.min,
                                           "max": s.max, "points": s.points}
    return out


def trial_document(tracker: Tracker, trial: Trial, stats: dict[tuple[str, str], Stat]) -> dict[str, Any]:
    """``{"trial": TRIAL, "attempts": [ATTEMPT], "metrics": {...}}`` (``show --json``)."""
    attempts = tracker.attempts(trial.id)
    return {"trial": trial_json(tracker, trial, attempts), "attempts": [attempt_json(a) for a in attempts],
            "metrics": metrics_summary(stats)}


def checkpoints_document(home: Path, tracker: Tracker, trial: Trial) -> dict[str, Any]:
    """``{"trial", "location", "verified": false, "checkpoints": [...]}`` (``checkpoints --json``)."""
    target = trial_target(home, tracker, trial)
    records = {r.uuid: r for r in tracker.checkpoints(trial.id)}
    rows = [_checkpoint_json(e, records.get(e.uuid), None) for e in entries(target)]
    return {"trial": trial.ref, "location": str(target.location), "verified": False, "checkpoints": rows}


def run_row(trial: dict[str, Any], attempts: list[Attempt], stats: dict[tuple[str, str], Stat]) -> dict[str, Any]:
    """What the runs table adds to a TRIAL: duration (first start to last end, or to now while it
    runs: null), host and Slurm job of the newest attempt, and the metrics it reports."""
    last = attempts[-1] if attempts else None
    ended = [a.ended_at for a in attempts if a.ended_at is not None]
    running = any(a.ended_at is None for a in attempts)
    return {**trial,
            "started_at": attempts[0].started_at if attempts else None,
            "ended_at": None if running or not ended else max(ended),
            "host": last.host if last else None,
            "slurm_job": _slurm_job(last),
            "metrics": {f"{g}/{n}": [s.steps_completed, s.value, s.min, s.max, s.points]
                        for (g, n), s in sorted(stats.items())}}


def runs_document(tracker: Tracker | None, home: Path, stats_of) -> dict[str, Any]:
    """``{"home", "metric_fields", "runs": [TRIAL + run_row]}``; ``stats_of(trial_ids) -> Stats``.

    Each run's ``metrics`` maps "group/name" to ``[steps, latest, min, max, points]``.
    """
    doc: dict[str, Any] = {"home": str(home), "metric_fields": ["steps_completed", "value", "min", "max", "points"],
                           "runs": []}
    if tracker is None:
        return doc
    trials = tracker.trials()
    stats: Stats = stats_of([t.id for t in trials])
    for trial in trials:
        attempts = tracker.attempts(trial.id)
        doc["runs"].append(run_row(trial_json(tracker, trial, attempts), attempts, stats.get(trial.id, {})))
    return doc


def _slurm_job(attempt: Attempt | None) -> str | None:
    if attempt is None or not attempt.slurm_job_id:
        return None
    return attempt.slurm_job_id + (f"_{attempt.slurm_array_task}" if attempt.slurm_array_task else "")
