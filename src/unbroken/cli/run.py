"""`unbroken run [OPTIONS] -- CMD ...`: supervise a training command (see launch.supervisor)."""

from __future__ import annotations

import sys

import click

from ..errors import UnbrokenError
from ..launch import restart
from ..launch.supervisor import RunConfig, Supervisor


def parse_duration(text: str | None) -> float | None:
    """``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"1d"``, ``"2:30:00"`` -> seconds."""
    if text is None:
        return None
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            seconds = 0.0
            for part in parts:
                seconds = seconds * 60 + part
            return seconds
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration (examples: 90, 90s, 15m, 12h, 2:30:00)") from None


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--name", help="Experiment name (default: derived from the command, e.g. train.py -> train).")
@click.option("--fresh", is_flag=True, help="Start a new trial instead of resuming the newest one.")
@click.option("--trial", type=click.IntRange(min=1), default=None, help="Resume this trial number of the experiment.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Restarts allowed after crashes since the last progress (a new checkpoint resets the count).")
@click.option("--max-total-failures", type=click.IntRange(min=0), default=None,
              help="Give up after this many crashes in all, progress or not.")
@click.option("--backoff", type=float, default=1.0, show_default=True, help="Seconds before the first restart; doubles each time.")
@click.option("--backoff-max", type=float, default=60.0, show_default=True, help="Longest wait between restarts.")
@click.option("--grace", type=float, default=60.0, show_default=True,
              help="Seconds a stopping command may take to save before it is killed.")
@click.option("--preempt-signal", default="USR2", show_default=True,
              help="Extra signal that asks for a save-and-stop (besides TERM and INT).")
@click.option("--time-limit", help="Stop (after saving) this long after the start, e.g. 11h30m is 11.5h; 12h, 45m, 2:00:00.")
@click.option("--margin", default="60s", show_default=True, help="Ask the command to save this long before the time limit.")
@click.option("--reset-after", default=None,
              help="Count an attempt that ran this long as progress (for commands that checkpoint themselves).")
@click.option("--slurm/--no-slurm", default=None,
              help="Act as a Slurm job (requeue after a save, stop before the job's end). Default: when $SLURM_JOB_ID is set.")
@click.option("--max-requeues", type=click.IntRange(min=0), default=None,
              help="Under Slurm: requeue the job at most this many times.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx, name, fresh, trial, slurm, max_requeues, max_restarts, max_total_failures, backoff, backoff_max, grace, preempt_signal,
                time_limit, margin, reset_after, command):
    """Run COMMAND as a trial: stream and log its output, restart it on crashes, resume it.

    \b
    Exit status: 0 completed; 75 preempted or time limit (it saved: run again to resume);
    1 out of restarts or could not start; 130 cancelled.
    """
    stop = restart.max_failures(max_restarts)
    if max_total_failures is not None:
        stop = stop | restart.max_total_failures(max_total_failures)
    try:
        config = RunConfig(command=list(command), name=name, home=ctx.obj.get("home"), fresh=fresh, trial=trial, stop=stop,
                           wait=restart.exponential_backoff(backoff, max(backoff, backoff_max)), grace=grace,
                           preempt_signal=preempt_signal, time_limit=parse_duration(time_limit),
                           margin=parse_duration(margin), reset_after=parse_duration(reset_after))
        code = Supervisor(config, _environment(slurm, max_requeues)).run()
    except UnbrokenError as exc:
        click.echo(f"unbroken run: {exc}", err=True)
        code = 1
    sys.exit(code)


def _environment(slurm: bool | None, max_requeues: int | None):
    """The Slurm environment inside a Slurm job (or when forced), else a plain machine."""
    from ..launch.slurm import JobInfo, SlurmEnvironment  # noqa: PLC0415

    job = JobInfo.from_env()
    if slurm is None:
        slurm = job is not None
    if not slurm:
        return None
    if job is None:
        raise click.UsageError("--slurm needs to run inside a Slurm job ($SLURM_JOB_ID is not set)")
    return SlurmEnvironment(job, max_requeues)


def register(group) -> None:
    """Add the `run` command to ``group``."""
    group.add_command(run_command)
