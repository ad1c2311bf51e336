"""`unbroken show TRIAL`: one trial's header, hyperparameters, attempts and metrics."""

from __future__ import annotations

import time
from typing import Any

import click

from ..tracking import Attempt, attempt_state
from . import _output as out
from ._output import json_command
from ._resolve import find_trial, home_of, open_index
from ._shapes import attempt_json, trial_json
from .metrics import summaries, summary_json, summary_table


# -- show ----------------------------------------------------------------------------------------
@click.command("show")
@click.argument("trial")
@json_command
def show(ctx: click.Context, trial: str, as_json: bool) -> None:
    """Show one TRIAL (EXPERIMENT for its newest, or EXPERIMENT/NUMBER): hparams, attempts, metrics.

    \b
    --json prints:
      {"trial": TRIAL (see `ls --help`),
       "attempts": [{"number": int, "started_at": float, "ended_at": float|null,
                     "duration_s": float|null, "host": str|null, "pid": int|null, "launcher": str,
                     "exit_code": int|null, "signal": int|null, "end_reason": str|null,
                     "message": str|null, "log_path": str|null, "restored_uuid": str|null,
                     "restored_steps": int|null, "slurm_job_id": str|null,
                     "slurm_array_task": str|null, "slurm_nodes": str|null,
                     "slurm_restarts": int|null, "state": str}],
       "metrics": {GROUP: {NAME: {"steps_completed": int, "value": float|null,
                                  "min": float|null, "max": float|null, "points": int}}}}
    end_reason is null while an attempt runs; state is "running", the end reason, or "lost" when
    the attempt's process is gone without recording its end (killed); per metric: the value reported last (and its
    step), the smallest and largest finite value and the number of points (every point:
    `unbroken metrics TRIAL`). The table draws each metric's history as a sparkline.
    """
    tracker = open_index(ctx, home_of(ctx), readonly=True)
    found = find_trial(tracker, trial)
    attempts = tracker.attempts(found.id)
    metrics = summaries(tracker, found)
    header = trial_json(tracker, found, attempts)
    if as_json:
        out.emit_json({"trial": header, "attempts": [attempt_json(a) for a in attempts],
                       "metrics": summary_json(metrics)})
        return
    con = out.console()
    con.print(_trial_header(header))
    if found.hparams:
        con.print("", _hparams_table(found.hparams), sep="\n")
    con.print("", _attempts_table(attempts) if attempts else "no attempts yet", sep="\n")
    if metrics:
        con.print("", summary_table(metrics), sep="\n")


def _trial_header(t: dict[str, Any]) -> str:
    lines = [f"Trial {t['ref']}: {t['status']}" + (f" ({t['message']})" if t["message"] else ""),
             f"  steps {t['steps_completed']}, progress {out.percent(t['progress'])}, "
             f"{t['attempts']} attempt(s), {t['restarts']} restart(s)",
             f"  created {out.when(t['created_at'])}, updated {out.when(t['updated_at'])} ({out.age(t['updated_at'])})"]
    if t["command"]:
        lines.append(f"  command {t['command']}")
    if t["storage"]:
        lines.append(f"  storage {t['storage']}")
    return "\n".join(lines)


def _hparams_table(hparams: dict[str, Any]):
    rows = out.table("HPARAM", "VALUE", title="Hyperparameters")
    for key, value in out.flat(hparams).items():
        rows.add_row(key, out.short(value, 80))
    return rows


def _attempts_table(attempts: list[Attempt]):
    slurm = any(a.slurm_job_id for a in attempts)
    columns = ["#", "STARTED", "DURATION", "HOST", "PID", "EXIT", "END", "RESTORED"]
    rows = out.table(*columns, *(["SLURM"] if slurm else []), "LOG", title="Attempts")
    now = time.time()
    for a in attempts:
        end = attempt_state(a)
        if a.message:
            end += f": {out.short(a.message, 50)}"
        restored = "-" if a.restored_steps is None else f"step {a.restored_steps}"
        cells = [str(a.number), out.when(a.started_at), out.duration((a.ended_at or now) - a.started_at),
                 a.host or "-", str(a.pid or "-"), out.exit_status(a.exit_code, a.signal), end, restored]
        if slurm:
            cells.append(_slurm_cell(a))
        rows.add_row(*cells, a.log_path or "-")
    return rows


def _slurm_cell(a: Attempt) -> str:
    if not a.slurm_job_id:
        return "-"
    job = a.slurm_job_id + (f"_{a.slurm_array_task}" if a.slurm_array_task else "")
    return job + (f" on {a.slurm_nodes}" if a.slurm_nodes else "")
