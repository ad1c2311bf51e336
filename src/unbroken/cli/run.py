"""`unbroken run [OPTIONS] -- CMD ...`: supervise a training command (see launch.supervisor)."""

from __future__ import annotations

import os
import sys

import click

from ..errors import ConfigError, UnbrokenError
from ..launch import restart
from ..launch.durations import parse_duration
from ..signals import parse_signal
from ..launch.supervisor import RunConfig, Supervisor


class Duration(click.ParamType):
    """A click type for :func:`~unbroken.launch.durations.parse_duration` (seconds as a float)."""

    name = "duration"

    def __init__(self, allow_inf: bool = False):
        self.allow_inf = allow_inf

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value, _option(param), allow_inf=self.allow_inf)
        except ConfigError as exc:
            self.fail(str(exc).split(": ", 1)[1], param, ctx)


class StopSignal(click.ParamType):
    """A click type for a catchable signal name (``USR2``, ``SIGTERM``); KILL, STOP and unknown ones fail."""

    name = "signal"

    def __init__(self, allow_none: bool = False):
        self.allow_none = allow_none

    def convert(self, value, param, ctx):
        if self.allow_none and str(value).lower() == "none":
            return None
        try:
            return parse_signal(value).name[3:]
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def _option(param) -> str:
    return param.opts[0] if param is not None and param.opts else "duration"


@click.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--name", help="Experiment name (default: derived from the command, e.g. train.py -> train).")
@click.option("--fresh", is_flag=True, help="Start a new trial instead of resuming the newest one.")
@click.option("--trial", type=click.IntRange(min=1), default=None, help="Resume this trial number of the experiment.")
@click.option("--wait", "wait_for_trial", type=Duration(allow_inf=True), default="0", show_default=True,
              help="If another live process writes the trial, wait this long for it to end ('inf': no limit) "
                   "instead of refusing at once.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
              help="Restarts allowed after crashes since the last progress (a new checkpoint resets the count).")
@click.option("--max-total-failures", type=click.IntRange(min=0), default=None,
              help="Give up after this many crashes in all, progress or not.")
@click.option("--backoff", type=Duration(), default="1s", show_default=True,
              help="Wait before the first restart; doubles each time.")
@click.option("--backoff-max", type=Duration(), default="60s", show_default=True, help="Longest wait between restarts.")
@click.option("--grace", type=Duration(), default="60s", show_default=True,
              help="How long a stopping command may take to save before it is killed.")
@click.option("--preempt-signal", type=StopSignal(), default="USR2", show_default=True,
              help="Extra signal that asks for a save-and-stop (besides TERM and INT).")
@click.option("--time-limit", type=Duration(), default=None,
              help="Stop (after saving) this long after the start, e.g. 11h30m is 11.5h; 12h, 45m, 2:00:00.")
@click.option("--margin", type=Duration(), default="60s", show_default=True,
              help="Ask the command to save this long before the time limit.")
@click.option("--reset-after", type=Duration(), default=None,
              help="Count an attempt that ran this long as progress (for commands that checkpoint themselves).")
@click.option("--slurm/--no-slurm", default=None,
              help="Act as a Slurm job (requeue after a save, stop before the job's end). Default: when $SLURM_JOB_ID is set.")
@click.option("--max-requeues", type=click.IntRange(min=0), default=None,
              help="Under Slurm: requeue the job at most this many times.")
@click.option("--max-requeues-without-progress", "max_stalled", type=click.IntRange(min=1), default=3,
              show_default=True,
              help="Under Slurm: stop requeueing (exit 3, trial failed) after this many allocations in a row "
                   "committed no checkpoint past the best one.")
@click.option("--chain", is_flag=True,
              help="Under Slurm: do not requeue; a follow-up job continues (set by `unbroken slurm submit --chain`).")
@click.option("--spot", type=click.Choice(["aws", "gcp", "azure", "auto"]), envvar="UNBROKEN_SPOT", default=None,
              help="Poll this cloud's spot/preemption notices ($UNBROKEN_SPOT); a notice saves and stops like a "
                   "signal. 'auto' probes each service once.")
@click.option("--spot-interval", type=Duration(), default="5s", show_default=True,
              help="How often to ask the metadata service for a spot notice.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=None,
              help="Run COMMAND as a torch.distributed group of this many ranks (through torchrun, restarted as a "
                   "whole; one log per rank per attempt).")
@click.option("--config", "det_config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A Determined experiment config (YAML/JSON): its name, constant hyperparameters, searcher "
                   "max_length, max_restarts, checkpoint_storage and entrypoint (see docs/migrating.md).")
@click.option("--searcher-length", type=click.IntRange(min=1), default=None,
              help="The length of the Determined searcher's one operation (core.searcher.operations()).")
@click.argument("command", nargs=-1, required=False, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx, name, det_config, searcher_length, nproc_per_node, fresh, trial, wait_for_trial, slurm, max_requeues, max_stalled, chain, spot, spot_interval,
                max_restarts, max_total_failures, backoff, backoff_max, grace, preempt_signal, time_limit, margin,
                reset_after, command):
    """Run COMMAND as a trial: stream and log its output, restart it on crashes, resume it.

    \b
    Durations: 90 (seconds), 90s, 15m, 11h30m, 1d2h, 2:30:00.
    Exit status: 0 completed; 75 preempted, spot notice or time limit (it saved: run again to resume);
    1 out of restarts, could not start, or the trial is busy; 3 gave up requeueing (no progress);
    130 cancelled.
    """
    try:
        name, command, max_restarts = _determined(ctx, det_config, searcher_length, name, command, max_restarts)
    except UnbrokenError as exc:
        raise click.UsageError(str(exc)) from None
    if not command:
        raise click.UsageError("give the command to run: unbroken run -- python train.py")
    stop = restart.max_failures(max_restarts)
    if max_total_failures is not None:
        stop = stop | restart.max_total_failures(max_total_failures)
    environment = _environment(slurm, max_requeues, chain)
    try:
        config = RunConfig(command=list(command), name=name, home=ctx.obj.get("home"), storage=ctx.obj.get("storage"),
                           db=ctx.obj.get("db"),
                           fresh=fresh, trial=trial,
                           stop=stop, wait=restart.exponential_backoff(backoff, max(backoff, backoff_max)),
                           grace=grace, preempt_signal=preempt_signal, time_limit=time_limit, margin=margin,
                           reset_after=reset_after, wait_for_trial=wait_for_trial, spot=spot,
                           spot_interval=spot_interval, max_stalled=max_stalled, nproc_per_node=nproc_per_node)
        code = Supervisor(config, environment).run()
    except UnbrokenError as exc:
        click.echo(f"unbroken run: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:  # Ctrl-C before the supervisor's handlers were installed (e.g. in --wait)
        click.echo("unbroken run: interrupted", err=True)
        code = 130
    sys.exit(code)


def _determined(ctx, config_path, searcher_length, name, command, max_restarts):
    """Apply a Determined experiment config and/or searcher length: options the user did not give
    come from the config, and the values the compat layer reads go into this process's environment
    (the child inherits them). Returns ``(name, command, max_restarts)``."""
    if config_path is None and searcher_length is None:
        return name, command, max_restarts
    from ..compat.determined import _env  # noqa: PLC0415 - only for Determined programs
    from ..compat.determined.expconf import load_experiment_config  # noqa: PLC0415

    if config_path is None:
        os.environ.update(_env.encode(searcher_length=searcher_length))
        return name, command, max_restarts
    plan = load_experiment_config(config_path, searcher_length=searcher_length)
    os.environ.update(plan.child_env())
    if plan.storage and ctx.find_root().obj.get("storage") is None:
        ctx.find_root().obj["storage"] = plan.storage
    given = ctx.get_parameter_source("max_restarts") == click.core.ParameterSource.COMMANDLINE
    return (name or plan.name, command or tuple(plan.entrypoint or ()),
            max_restarts if given else plan.max_restarts)


def _environment(slurm: bool | None, max_requeues: int | None, chain: bool = False):
    """The Slurm environment inside a Slurm job (or when forced), else a plain machine."""
    from ..launch.slurm import JobInfo, SlurmEnvironment  # noqa: PLC0415

    job = JobInfo.from_env()
    if slurm is None:
        slurm = job is not None
    if not slurm:
        return None
    if job is None:
        raise click.UsageError("--slurm needs to run inside a Slurm job ($SLURM_JOB_ID is not set)")
    return SlurmEnvironment(job, max_requeues, chain=chain)


def register(group) -> None:
    """Add the `run` command to ``group``."""
    group.add_command(run_command)
