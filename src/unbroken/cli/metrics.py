"""`unbroken metrics TRIAL`: every reported metric point; and the per-metric summary of `show`.

A metric is a (group, name) pair; a point is one value reported at a ``steps_completed``.
Points are listed in the order of their steps (a resumed trial may report a step twice: once
by the attempt that died after it, once by the one that resumed before it).
"""

from __future__ import annotations

import csv
import math
import sys
from typing import Any

import click

from ..tracking import MetricPoint, Tracker, Trial
from . import _output as out
from ._output import CliError, handle_errors
from ._resolve import find_trial, home_of, open_index

#: The columns of `unbroken metrics` (CSV header, table, and the keys of each JSON point).
COLUMNS = ("group", "steps_completed", "name", "value", "time", "attempt")


@click.command("metrics")
@click.argument("trial")
@click.option("--group", "-g", help="Only metrics of this group (e.g. training, validation).")
@click.option("--name", "-n", help="Only metrics of this name (e.g. loss).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header line.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable shape, see the help).")
@click.pass_context
@handle_errors
def metrics(ctx: click.Context, trial: str, group: str | None, name: str | None, as_csv: bool,
            as_json: bool) -> None:
    """Print every metric point of TRIAL (EXPERIMENT for its newest, or EXPERIMENT/NUMBER).

    Columns: group, steps_completed, name, value, time (Unix seconds), attempt (its number).

    \b
    --json prints:
      {"trial": "exp/1", "points": [{"group": str, "steps_completed": int, "name": str,
                                     "value": float|null, "time": float, "attempt": int|null}]}
    in the order of steps_completed (then of reporting). --csv prints the same columns.
    """
    if as_csv and as_json:
        raise CliError("choose one of --csv and --json")
    tracker = open_index(ctx, home_of(ctx), readonly=True)
    found = find_trial(tracker, trial)
    rows = points_json(tracker, found, group, name)
    if as_json:
        out.emit_json({"trial": found.ref, "points": rows})
    elif as_csv:
        _write_csv(rows)
    elif not rows:
        which = " ".join(f"{k} {v!r}" for k, v in (("group", group), ("name", name)) if v)
        click.echo(f"trial {found.ref} has no metrics" + (f" with {which}" if which else ""))
    else:
        out.console().print(_points_table(rows))


def points_json(tracker: Tracker, trial: Trial, group: str | None = None, name: str | None = None
                ) -> list[dict[str, Any]]:
    """The points of ``trial`` (filtered by group and name) as the JSON objects of `metrics`."""
    numbers = {a.id: a.number for a in tracker.attempts(trial.id)}
    return [{"group": p.group, "steps_completed": p.steps_completed, "name": p.name, "value": p.value,
             "time": p.time, "attempt": numbers.get(p.attempt_id)}
            for p in tracker.metrics(trial.id, group=group, name=name)]


def _write_csv(rows: list[dict[str, Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])


def _points_table(rows: list[dict[str, Any]]):
    table = out.table("GROUP", "STEP", "NAME", "VALUE", "TIME", "ATTEMPT")
    for r in rows:
        table.add_row(r["group"], str(r["steps_completed"]), r["name"], out.number(r["value"]), out.when(r["time"]),
                      "-" if r["attempt"] is None else str(r["attempt"]))
    return table


# -- the summary of `show` -------------------------------------------------------------------------
def summaries(tracker: Tracker, trial: Trial) -> dict[str, dict[str, dict[str, Any]]]:
    """``{group: {name: {"steps_completed", "value", "min", "max", "points", "history"}}}``.

    ``steps_completed``/``value``: the point reported last; ``min``/``max``: over the finite
    values (null when none); ``points``: how many; ``history``: every value in step order (for
    the sparkline; not part of the JSON of `show`).
    """
    history: dict[tuple[str, str], list[MetricPoint]] = {}
    for p in tracker.metrics(trial.id):
        history.setdefault((p.group, p.name), []).append(p)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for group, names in tracker.latest_metrics(trial.id).items():
        for name, (steps, value) in names.items():
            values = [p.value for p in history.get((group, name), [])]
            finite = [v for v in values if v is not None and math.isfinite(v)]
            summary.setdefault(group, {})[name] = {
                "steps_completed": steps, "value": value, "min": min(finite, default=None),
                "max": max(finite, default=None), "points": len(values), "history": values}
    return summary


def summary_json(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``metrics`` object of `show --json`: the summary without the histories."""
    return {group: {name: {k: v for k, v in s.items() if k != "history"} for name, s in names.items()}
            for group, names in summary.items()}


def summary_table(summary: dict[str, dict[str, dict[str, Any]]]):
    """GROUP NAME STEP LAST MIN MAX HISTORY: one row per metric, with a sparkline of its values."""
    rows = out.table("GROUP", "NAME", "STEP", "LAST", "MIN", "MAX", "HISTORY", title="Metrics")
    for group, names in summary.items():
        for name, s in names.items():
            rows.add_row(group, name, str(s["steps_completed"]), out.number(s["value"]), out.number(s["min"]),
                         out.number(s["max"]), out.sparkline(s["history"]) or "-")
    return rows
