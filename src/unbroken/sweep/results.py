"""A sweep's results: the best trial, config and result, per-trial results, CSV and JSON export.

:class:`SweepAnalysis` answers as Ray Tune's ``ExperimentAnalysis`` does (``best_config``,
``best_result``, ``best_trial``, ``results``, ``trials``, ``get_best_config(metric, mode)``),
comparing each trial's *last* result. Built from the sweep's rows; pure.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any, Mapping

from ..errors import ConfigError

_RAY_STATUS = {"terminated": "TERMINATED", "error": "ERROR", "paused": "PAUSED", "running": "RUNNING",
               "ready": "PENDING"}


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """One trial of a sweep: ``ref`` (experiment/number), config, state, last result, results at segment ends."""

    number: int
    ref: str
    config: dict[str, Any]
    state: str
    iteration: int
    last_result: dict[str, Any] | None
    results: dict[int, dict[str, Any]]
    message: str | None

    @property
    def trial_id(self) -> str:
        return str(self.number)

    @property
    def status(self) -> str:
        """Ray Tune's name of the state (TERMINATED, ERROR, ...)."""
        return _RAY_STATUS.get(self.state, self.state.upper())

    def to_json(self) -> dict[str, Any]:
        return {"trial": self.ref, "number": self.number, "state": self.state, "iteration": self.iteration,
                "config": self.config, "last_result": self.last_result, "message": self.message,
                "results": {str(k): v for k, v in sorted(self.results.items())}}


class SweepAnalysis:
    """The results of a sweep (see the module docstring)."""

    def __init__(self, name: str, metric: str | None, mode: str | None, trials: list[TrialResult]):
        self.name, self.default_metric, self.default_mode, self.trials = name, metric, mode, trials

    def get_best_trial(self, metric: str | None = None, mode: str | None = None) -> TrialResult | None:
        """The trial whose last result has the best ``metric`` (None if no trial reported it)."""
        metric, mode = metric or self.default_metric, mode or self.default_mode
        if metric is None or mode not in ("min", "max"):
            raise ConfigError("name a metric and a mode ('min' or 'max') to pick the best trial")
        scored = [(t, _number((t.last_result or {}).get(metric))) for t in self.trials]
        scored = [(t, v) for t, v in scored if v is not None]
        if not scored:
            return None
        sign = 1 if mode == "max" else -1
        return max(scored, key=lambda tv: (sign * tv[1], -tv[0].number))[0]

    def get_best_config(self, metric: str | None = None, mode: str | None = None) -> dict[str, Any] | None:
        best = self.get_best_trial(metric, mode)
        return None if best is None else best.config

    @property
    def best_trial(self) -> TrialResult | None:
        return self.get_best_trial()

    @property
    def best_config(self) -> dict[str, Any] | None:
        return self.get_best_config()

    @property
    def best_result(self) -> dict[str, Any] | None:
        best = self.best_trial
        return None if best is None else best.last_result

    @property
    def results(self) -> dict[str, dict[str, Any] | None]:
        """trial id -> its last result."""
        return {t.trial_id: t.last_result for t in self.trials}

    def to_json(self) -> dict[str, Any]:
        best = self.get_best_trial() if self.default_metric else None
        return {"sweep": self.name, "metric": self.default_metric, "mode": self.default_mode,
                "best": None if best is None else best.to_json(), "trials": [t.to_json() for t in self.trials]}

    def to_csv(self) -> str:
        """One row per trial: trial, state, iteration, ``config/...`` and the last result's values."""
        rows = [{"trial": t.ref, "state": t.state, "iteration": t.iteration, **_flat(t.config, "config/"),
                 **_flat({k: v for k, v in (t.last_result or {}).items() if k != "config"}, "")} for t in self.trials]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def dataframe(self):
        """The CSV's table as a pandas DataFrame (needs pandas)."""
        import pandas  # noqa: PLC0415 - optional

        return pandas.read_csv(io.StringIO(self.to_csv()))

    results_df = property(dataframe)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _flat(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def analysis_of(name: str, metric: str | None, mode: str | None, rows: Mapping[int, Any]) -> SweepAnalysis:
    """The analysis of a sweep from its rows (:class:`~.state.TrialRow`)."""
    trials = [TrialResult(r.number, f"{name}/{r.number}", r.config, r.state, r.iteration, r.last_result,
                          dict(r.results), r.message) for _, r in sorted(rows.items())]
    return SweepAnalysis(name, metric, mode, trials)
