"""`unbroken slurm submit`: turn a training command into a self-requeueing Slurm job."""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import click

from ..checkpoint.store.trialstore import location_of
from ..config import check_name, resolve_home, resolve_storage_root
from ..errors import UnbrokenError
from ..launch.runconfig import derive_name
from ..launch.slurm import (SubmitOptions, check_user_script, render_script, sbatch_flags_for_script, submit)
from ..paths import TrialPaths, slurm_dir
from ..tracking import Tracker, resolve_db_url
from ..tracking.url import backend_of, sqlite_path
from ..tracking.trials import join_trial
from .run import Duration, StopSignal


@click.group("slurm")
def slurm_group() -> None:
    """Run trials as Slurm jobs that save and requeue themselves before their time limit."""


@slurm_group.command("submit", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--name", help="Experiment name (default: derived from the command).")
@click.option("--time", "time_", help="Time limit per allocation, as sbatch --time (e.g. 12:00:00).")
@click.option("--partition")
@click.option("--gres")
@click.option("--cpus-per-task", type=int)
@click.option("--mem")
@click.option("--nodes", type=int)
@click.option("--ntasks-per-node", type=int)
@click.option("--array", help="Job array spec; each task is its own experiment NAME-<task id>.")
@click.option("--account")
@click.option("--qos")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, help="Any other sbatch option, repeatable.")
@click.option("--signal", "signal_", type=StopSignal(allow_none=True), default="USR2", show_default=True,
              help="Signal Slurm sends to the job before its limit (USR1 is taken by NCCL); 'none' to rely "
                   "on the job's end time alone.")
@click.option("--margin", type=Duration(), default="120", show_default=True,
              help="How long before the time limit the training saves and the job requeues (at least 1 s).")
@click.option("--max-requeues", type=click.IntRange(min=0), default=None, help="Requeue at most this many times.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Crash restarts inside one allocation (since the last progress).")
@click.option("--max-requeues-without-progress", "max_stalled", type=click.IntRange(min=1), default=None,
              help="Stop requeueing after this many allocations in a row without a new checkpoint (run's default: 3).")
@click.option("--chain", is_flag=True,
              help="Where `scontrol requeue` is unavailable (a container) or refused: each job submits a follow-up "
                   "job (afterany) at its start that continues the trial; sbatch must be reachable in the job.")
@click.option("--script", "user_script", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Submit your own sbatch file (which runs `unbroken run -- ...`) with the requeue options added.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script and do not submit it.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit_command(ctx, name, time_, partition, gres, cpus_per_task, mem, nodes, ntasks_per_node, array, account, qos,
                   sbatch_args, signal_, margin, max_requeues, max_restarts, max_stalled, chain, user_script, dry_run,
                   command):
    """Submit COMMAND as a Slurm job that saves, requeues itself and resumes until done."""
    if margin < 1:
        raise click.BadParameter("must be at least 1 s (Slurm signals in whole seconds)", param_hint="'--margin'")
    margin = math.ceil(margin)
    try:
        home = resolve_home(ctx.obj.get("home"))
        if user_script is not None:
            _submit_user_script(user_script, signal_, margin, dry_run)
            return
        name = check_name(name or derive_name(command or ["run"]))
        storage = resolve_storage_root(ctx.obj.get("storage"))
        db = resolve_db_url(ctx.obj.get("db"), home)
        number = None if array else _trial_number(home, db, name, command, storage, create=not dry_run)
        logs = slurm_dir(home, name) if array else TrialPaths(home, name, number).logs
        path = logs / f"submit-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
        opts = SubmitOptions(command=list(command), name=name, home=home, logs=logs, trial=number, time=time_,
                             partition=partition, gres=gres, cpus_per_task=cpus_per_task, mem=mem, nodes=nodes,
                             ntasks_per_node=ntasks_per_node, array=array, account=account, qos=qos,
                             sbatch_args=sbatch_args, signal=signal_, margin=margin, max_requeues=max_requeues,
                             max_restarts=max_restarts, storage=storage, db=ctx.obj.get("db") and db,
                             max_stalled=max_stalled, chain=chain, script_path=path)
        script = render_script(opts)
        if dry_run:
            click.echo(script, nl=False)
            return
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        job_id = submit(path)
    except UnbrokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"submitted Slurm job {job_id} for {name}" + (f"/{number}" if number else " (array)"))
    click.echo(f"  script: {path}")
    click.echo(f"  follow: unbroken logs {name}{'-<task>' if array else ''} -f   |   squeue -j {job_id}")


@slurm_group.command("chain-next", hidden=True)
@click.option("--name", required=True)
@click.option("--trial", type=click.IntRange(min=1), required=True)
@click.option("--script", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--max-requeues", type=click.IntRange(min=0), default=None)
@click.pass_context
def chain_next_command(ctx, name, trial, script, max_requeues):
    """Inside a --chain job: submit the follow-up link. Exit 0: train; 3: the trial is finished; 1: sbatch failed."""
    from ..launch.chain import start_link  # noqa: PLC0415
    from ..launch.slurm import JobInfo  # noqa: PLC0415

    job = JobInfo.from_env()
    if job is None:
        raise click.ClickException("chain-next runs inside a Slurm job ($SLURM_JOB_ID is not set)")
    home = resolve_home(ctx.obj.get("home"))
    tracker = Tracker(resolve_db_url(ctx.obj.get("db"), home))
    try:
        status = tracker.trial(name, trial).status
        decision = start_link(status, job, script, max_requeues)
    except UnbrokenError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        tracker.close()
    click.echo(f"unbroken: {decision.message}", err=True)
    ctx.exit(0 if decision.go else 3)


def _trial_number(home: Path, db: str, name: str, command, storage: str | None, create: bool) -> int:
    """The trial the job will resume: the newest of the experiment, or a new one (made if ``create``)."""
    if not create and backend_of(db) == "sqlite" and not sqlite_path(db).exists():
        return 1
    tracker = Tracker(db)
    try:
        if not create:
            return tracker.trial(name).number
        return join_trial(tracker, name, command=shlex.join(command),
                          storage_of=location_of(home, name, storage)).number
    except LookupError:
        return 1
    finally:
        tracker.close()


def _submit_user_script(path: Path, signal: str, margin: int, dry_run: bool) -> None:
    check_user_script(path)
    flags = sbatch_flags_for_script(signal or "USR2", margin)
    if dry_run:
        click.echo("sbatch --parsable " + " ".join(flags) + f" {path}")
        return
    job_id = submit(path, flags)
    click.echo(f"submitted Slurm job {job_id} from {path} with {' '.join(flags)}")


def register(group) -> None:
    """Add the `slurm` command group to ``group``."""
    group.add_command(slurm_group)
