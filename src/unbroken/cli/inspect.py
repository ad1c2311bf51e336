"""The reading and repairing commands, registered on the `unbroken` group; `ls` lives here.

Every command prints a human table by default and, with ``--json``, one JSON document whose
shape is documented in its help and kept stable: keys are only ever added. Times are Unix
seconds (floats), sizes bytes. Errors are one line on stderr and exit status 1. One module per
command: show.py, checkpoints.py, logs.py, metrics.py, reindex.py; _verify.py (verify, export);
_cleanup.py (rm, rm-experiment, gc).
"""

from __future__ import annotations

import time
from typing import Any

import click

from . import _output as out
from ._output import json_command
from ._resolve import home_of, open_index
from ._shapes import trial_json


def register(group: click.Group) -> None:
    """Add the inspection commands to ``group``."""
    from ._cleanup import gc, rm, rm_experiment  # noqa: PLC0415 - one module per command
    from ._verify import export, verify  # noqa: PLC0415
    from .checkpoints import checkpoints  # noqa: PLC0415
    from .logs import logs  # noqa: PLC0415
    from .metrics import metrics  # noqa: PLC0415
    from .reindex import reindex  # noqa: PLC0415
    from .show import show  # noqa: PLC0415
    for command in (ls, show, metrics, checkpoints, logs, verify, export, rm, rm_experiment, gc, reindex):
        group.add_command(command)


# -- ls ------------------------------------------------------------------------------------------
@click.command("ls")
@click.argument("experiment", required=False)
@json_command
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
    status: created, running, completed, preempted, crashed, failed, cancelled, or "lost": the
    index says running but every process of the trial is gone (killed without recording it).
    """
    home = home_of(ctx)
    tracker = open_index(ctx, home, required=False, readonly=True)
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
