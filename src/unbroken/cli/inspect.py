"""Inspection commands: ls, show, checkpoints, logs (here); verify, export, rm, rm-experiment, gc.

Every command prints a human table by default and, with ``--json``, one JSON document whose
shape is documented in its help and kept stable: keys are only ever added. Times are Unix
seconds (floats), sizes bytes. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys

import socket
import time
from pathlib import Path
from typing import Any

import click

from .._proc import pid_alive
from ..config import trial_dir
from ..tracking import Attempt, CheckpointRecord, Tracker, Trial
from . import _output as out
from ._checks import Entry, entries, reason
from ._cleanup import gc, rm, rm_experiment
from ._output import CliError, handle_errors, json_option
from ._resolve import find_trial, home_of, open_index, trial_target
from ._verify import export, run_checks, verify

#: Seconds between two looks at a followed log file.
FOLLOW_INTERVAL = 0.5


def register(group: click.Group) -> None:
    """Add the inspection commands to ``group``."""
    for command in (ls, show, checkpoints, logs, verify, export, rm, rm_experiment, gc):
        group.add_command(command)


# -- JSON shapes shared by ls and show -----------------------------------------------------------
def trial_json(tracker: Tracker, trial: Trial) -> dict[str, Any]:
    attempts = tracker.attempts(trial.id)
    committed = [c.steps_completed for c in tracker.checkpoints(trial.id) if c.state == "committed"]
    return {
        "ref": trial.ref, "experiment": trial.experiment, "number": trial.number, "status": trial.status,
        "message": trial.message, "steps_completed": trial.steps_completed, "progress": trial.progress,
        "attempts": len(attempts), "restarts": max(0, len(attempts) - 1),
        "latest_checkpoint_steps": max(committed, default=None), "hparams": trial.hparams,
        "command": trial.command, "storage": trial.storage,
        "created_at": trial.created_at, "updated_at": trial.updated_at,
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    fields = {k: v for k, v in vars(attempt).items() if k not in ("id", "trial_id")}
    ended = attempt.ended_at
    return {**fields, "duration_s": None if ended is None else ended - attempt.started_at}


# -- ls ------------------------------------------------------------------------------------------
@click.command("ls")
@click.argument("experiment", required=False)
@json_option
@click.pass_context
@handle_errors
def ls(ctx: click.Context, experiment: str | None, as_json: bool) -> None:
    """List experiments and their trials (all, or those of EXPERIMENT).

    \b
    --json prints:
      {"home": str, "experiments": [{"name": str, "created_at": float, "trials": [TRIAL]}]}
    TRIAL (also in `show`):
      {"ref": "exp/1", "experiment": str, "number": int, "status": str, "message": str|null,
       "steps_completed": int, "progress": float|null, "attempts": int, "restarts": int,
       "latest_checkpoint_steps": int|null, "hparams": {}, "command": str|null, "storage": str,
       "created_at": float, "updated_at": float}
    """
    home = home_of(ctx)
    tracker = open_index(ctx, home, required=False)
    chosen = [] if tracker is None else [tracker.experiment(experiment)] if experiment else tracker.experiments()
    data = [{"name": e.name, "created_at": e.created_at,
             "trials": [trial_json(tracker, t) for t in tracker.trials(e.name)]} for e in chosen]
    if as_json:
        out.emit_json({"home": str(home), "experiments": data})
    elif not data:
        click.echo(f"no runs yet in {home}")
    else:
        out.console().print(_ls_table(data))


def _ls_table(experiments: list[dict[str, Any]]):
    rows = out.table("TRIAL", "STATUS", "STEPS", "PROGRESS", "RESTARTS", "CHECKPOINT", "UPDATED")
    now = time.time()
    for exp in experiments:
        if not exp["trials"]:
            rows.add_row(exp["name"], "(no trials)", *["-"] * 5)
        for t in exp["trials"]:
            ckpt = t["latest_checkpoint_steps"]
            rows.add_row(t["ref"], t["status"], str(t["steps_completed"]), out.percent(t["progress"]),
                         str(t["restarts"]), "-" if ckpt is None else f"step {ckpt}",
                         f"{out.when(t['updated_at'])} ({out.age(t['updated_at'], now)})")
    return rows


# -- show ----------------------------------------------------------------------------------------
@click.command("show")
@click.argument("trial")
@json_option
@click.pass_context
@handle_errors
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
                     "slurm_restarts": int|null}],
       "metrics": {GROUP: {NAME: {"steps_completed": int, "value": float|null}}}}
    end_reason is null while an attempt runs; metrics hold the value reported last per name.
    """
    tracker = open_index(ctx, home_of(ctx))
    found = find_trial(tracker, trial)
    attempts = tracker.attempts(found.id)
    metrics = {group: {name: {"steps_completed": s, "value": v} for name, (s, v) in names.items()}
               for group, names in tracker.latest_metrics(found.id).items()}
    if as_json:
        out.emit_json({"trial": trial_json(tracker, found), "attempts": [attempt_json(a) for a in attempts],
                       "metrics": metrics})
        return
    con = out.console()
    con.print(_trial_header(trial_json(tracker, found)))
    if found.hparams:
        con.print("", _hparams_table(found.hparams), sep="\n")
    con.print("", _attempts_table(attempts) if attempts else "no attempts yet", sep="\n")
    if metrics:
        con.print("", _metrics_table(metrics), sep="\n")


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
        end = a.end_reason or "running"
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


def _metrics_table(metrics: dict[str, dict[str, dict[str, Any]]]):
    rows = out.table("GROUP", "NAME", "STEP", "VALUE", title="Latest metrics")
    for group, names in metrics.items():
        for name, point in names.items():
            value = point["value"]
            rows.add_row(group, name, str(point["steps_completed"]), "-" if value is None else f"{value:.6g}")
    return rows


# -- checkpoints ---------------------------------------------------------------------------------
@click.command("checkpoints")
@click.argument("trial")
@click.option("--verify", "check", is_flag=True, help="Re-checksum every file (and record corrupt ones).")
@json_option
@click.pass_context
@handle_errors
def checkpoints(ctx: click.Context, trial: str, check: bool, as_json: bool) -> None:
    """List the checkpoints of TRIAL as storage holds them, with the index's corrupt marks.

    STATE is "committed" (valid manifest, recorded as committed, or verified now), "corrupt"
    (unreadable manifest, marked corrupt in the index, or failing --verify) or "unverified"
    (valid manifest, but not in the index: its files were never checked by this database).

    \b
    --json prints:
      {"trial": "exp/1", "location": str, "verified": bool,
       "checkpoints": [{"uuid": str, "steps_completed": int|null, "size_bytes": int|null,
                        "created_at": float|null, "state": "committed"|"corrupt"|"unverified",
                        "reason": str|null, "files": int|null, "metadata": {}}]}
    oldest first; folders without a valid manifest come last (their numbers from the index).
    """
    home = home_of(ctx)
    tracker = open_index(ctx, home)
    found = find_trial(tracker, trial)
    target = trial_target(home, tracker, found)
    items = entries(target)
    results = run_checks(target, items) if check else None
    records = {r.uuid: r for r in tracker.checkpoints(found.id)}
    rows = [_checkpoint_json(e, records.get(e.uuid), results) for e in items]
    if as_json:
        out.emit_json({"trial": found.ref, "location": str(target.location), "verified": check, "checkpoints": rows})
    elif not rows:
        click.echo(f"trial {found.ref} has no checkpoints in {target.location}")
    else:
        out.console().print(_checkpoints_table(rows))


def _checkpoint_json(entry: Entry, record: CheckpointRecord | None, results: dict[str, str | None] | None
                     ) -> dict[str, Any]:
    m = entry.manifest
    state, reason = _state_of(entry, record, results)
    return {
        "uuid": entry.uuid,
        "steps_completed": m.steps_completed if m else record and record.steps_completed,
        "size_bytes": m.size if m else record and record.size_bytes,
        "created_at": m.created_at if m else record and record.created_at,
        "state": state, "reason": reason,
        "files": len(m.files) if m else None,
        "metadata": m.metadata if m else (record.metadata if record else {}),
    }


def _state_of(entry: Entry, record: CheckpointRecord | None, results: dict[str, str | None] | None
              ) -> tuple[str, str | None]:
    if results is not None:
        why = results[entry.uuid]
        return ("corrupt", why) if why else ("committed", None)
    if entry.problem:
        return "corrupt", reason(entry.uuid, entry.problem)
    if record is not None and record.state == "corrupt":
        return "corrupt", reason(entry.uuid, record.message)
    if record is not None and record.state == "committed":
        return "committed", None
    return "unverified", None


def _checkpoints_table(rows: list[dict[str, Any]]):
    table = out.table("UUID", "STEP", "SIZE", "AGE", "STATE", "METADATA")
    for r in rows:
        state = r["state"] + (f": {out.short(r['reason'], 70)}" if r["reason"] else "")
        step = "-" if r["steps_completed"] is None else str(r["steps_completed"])
        table.add_row(r["uuid"], step, out.size(r["size_bytes"]), out.age(r["created_at"]), state,
                      out.summary(r["metadata"]))
    return table


# -- logs ----------------------------------------------------------------------------------------
@click.command("logs")
@click.argument("trial")
@click.option("--attempt", "-a", "number", type=int, help="Only attempt NUMBER (default: every attempt).")
@click.option("--follow", "-f", is_flag=True, help="Follow the newest (or chosen) attempt's log until it ends.")
@click.pass_context
@handle_errors
def logs(ctx: click.Context, trial: str, number: int | None, follow: bool) -> None:
    """Print the log of each attempt of TRIAL (written by `unbroken run`).

    With several logs, each starts with a line "==> attempt N: PATH <==". --follow prints the
    log as it grows, until the attempt ends (or its process is gone); Ctrl-C stops it (exit 0).
    """
    home = home_of(ctx)
    tracker = open_index(ctx, home)
    found = find_trial(tracker, trial)
    attempts = _chosen_attempts(tracker, found, number)
    if follow:
        _follow(tracker, attempts[-1], _log_path(home, found, attempts[-1]))
        return
    paths = {a.number: _log_path(home, found, a) for a in attempts}
    if not any(p.is_file() for p in paths.values()):
        raise CliError(f"trial {found.ref} has no attempt logs (logs are written when it runs under `unbroken run`)")
    for number, path in paths.items():
        if not path.is_file():
            out.note(f"attempt {number}: no log at {path}")
            continue
        if len(paths) > 1:
            click.echo(f"==> attempt {number}: {path} <==")
        _copy_from(path, 0)


def _chosen_attempts(tracker: Tracker, trial: Trial, number: int | None) -> list[Attempt]:
    attempts = tracker.attempts(trial.id)
    if not attempts:
        raise CliError(f"trial {trial.ref} has no attempts yet")
    if number is None:
        return attempts
    chosen = [a for a in attempts if a.number == number]
    if not chosen:
        raise CliError(f"trial {trial.ref} has no attempt {number} (it has 1 to {attempts[-1].number})")
    return chosen


def _log_path(home: Path, trial: Trial, attempt: Attempt) -> Path:
    if attempt.log_path:
        return Path(attempt.log_path)
    return trial_dir(home, trial.experiment, trial.number) / "logs" / f"attempt-{attempt.number}.log"


def _copy_from(path: Path, offset: int) -> int:
    """Write the bytes of ``path`` from ``offset`` to stdout; return the new offset."""
    sink = sys.stdout.buffer
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) < offset:  # truncated or replaced: start over
                offset = 0
            f.seek(offset)
            while chunk := f.read(1 << 20):
                sink.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return offset
    sink.flush()
    return offset


def _follow(tracker: Tracker, attempt: Attempt, path: Path) -> None:
    offset = 0
    try:
        while True:
            offset = _copy_from(path, offset)
            current = tracker.attempt(attempt.id)
            if _finished(current):
                _copy_from(path, offset)
                out.note(f"attempt {current.number} ended: {current.end_reason or 'its process is gone'}")
                return
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        return


def _finished(attempt: Attempt) -> bool:
    if attempt.ended_at is not None:
        return True
    here = attempt.host == socket.gethostname()
    return bool(here and attempt.pid and not pid_alive(attempt.pid))
