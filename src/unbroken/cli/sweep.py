"""`unbroken sweep run|status|best|results`: hyperparameter sweeps (see unbroken.sweep).

``run`` drives a sweep to its end (exit 0), or until a signal made its trials save and stop
(exit 75: run the same command again to continue; so does a driver that was killed). The other
commands read the index only.
"""

from __future__ import annotations

import os
import sys

import click

from . import _output as out
from ._output import CliError, handle_errors, json_command
from ._resolve import db_url_of, home_of


@click.group("sweep")
def sweep_group() -> None:
    """Hyperparameter sweeps whose trials resume, restart and keep their history."""


@sweep_group.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("definition", required=False)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="A Determined experiment config with a searcher (grid, random, adaptive_asha) instead of "
                   "DEFINITION; trials run COMMAND (or its entrypoint) as Determined core-API scripts.")
@click.option("--executor", type=click.Choice(["local", "slurm", "ray"]), default=None,
              help="Where trials run (default: the file's executor, else local). Options stay those of the file.")
@click.option("--name", help="Override the sweep's name.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="Override max_concurrent.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def run(ctx, definition, config_path, executor, name, max_concurrent, command):
    """Run (or continue) the sweep DEFINITION: a YAML/JSON file, a .py file or a module (its `sweep`),
    or `module:attr`; or the search of a Determined experiment config (--config FILE, no DEFINITION).
    Trials run COMMAND (after --) or the definition's command or trainable (the config's entrypoint).

    \b
    Exit status: 0 every trial ended; 75 stopped by a signal (run again to continue); 1 an error.
    """
    from ..sweep.driver import Driver, SweepStopped  # noqa: PLC0415 - imported when used

    root = ctx.find_root().obj or {}
    storage = root.get("storage")
    if config_path is not None:
        spec, storage = _determined_spec(config_path, definition, command, name, max_concurrent, storage)
    else:
        spec = _definition_spec(definition, command, name, max_concurrent)
    if executor is not None:
        options = spec.executor if isinstance(spec.executor, dict) and spec.executor.get("type") == executor else {}
        spec.executor = {**options, "type": executor}
    try:
        analysis = Driver(spec, home=root.get("home"), storage=storage, db=root.get("db")).run()
    except SweepStopped:
        sys.exit(75)
    best = analysis.get_best_trial() if spec.metric else None
    if best is not None:
        out.note(f"best: {best.ref} {spec.metric}={best.last_result.get(spec.metric)!r} config={best.config}")
    failed = [t.ref for t in analysis.trials if t.state == "error"]
    if failed:
        raise CliError(f"{len(failed)} trial(s) failed: {', '.join(failed)} (see `unbroken logs TRIAL`)")


def _definition_spec(definition, command, name, max_concurrent):
    from ..sweep.spec import load_spec  # noqa: PLC0415

    if definition is None:
        raise CliError("give the sweep's DEFINITION (a sweep file or module), or --config EXPERIMENT.yaml")
    command = list(command[1:] if command[:1] == ("--",) else command)
    spec = load_spec(definition, name=name, max_concurrent=max_concurrent, command=command or None)
    if command:
        spec.trainable = None
    return spec


def _determined_spec(config_path, definition, command, name, max_concurrent, storage):
    """The sweep of a Determined config, and the storage to use (the option's, else the config's).

    With ``--config`` a ``--`` before COMMAND is taken by the parser, so DEFINITION holds the
    command's first word; a ``--`` still in COMMAND means a DEFINITION was given as well.
    """
    from ..compat.determined import _env  # noqa: PLC0415 - only for Determined programs
    from ..compat.determined.searchconf import load_search_config  # noqa: PLC0415

    if command[:1] == ("--",):
        raise CliError(f"give either a sweep DEFINITION ({definition}) or --config {config_path}, not both")
    command = [definition, *command] if definition is not None else []
    plan = load_search_config(config_path)
    for line in plan.notes:
        out.note(f"unbroken sweep: {line}")
    spec = plan.sweep_spec(command, name=name, max_concurrent=max_concurrent)
    for var in (_env.ENV_HPARAMS, _env.ENV_SEARCHER_LENGTH):  # each trial's own come from the sweep
        os.environ.pop(var, None)
    os.environ.update(plan.trial_env())  # inherited by every trial (as `unbroken run --config` does)
    return spec, storage or plan.experiment.storage


@sweep_group.command("status")
@click.argument("name", required=False)
@json_command
def status(ctx, name, as_json):
    """The trials of sweep NAME (or the list of sweeps): state, iteration, metric, config.

    \b
    --json prints: {"sweep", "status", "message", "metric", "mode", "definition",
      "trials": [{"trial", "number", "state", "iteration", "config", "last_result", "message", "results"}]}
    state: ready, running, paused, terminated (done or stopped by the scheduler), error.
    """
    store = _store(ctx)
    try:
        if name is None:
            names = store.sweep_names()
            out.emit_json({"sweeps": names}) if as_json else click.echo("\n".join(names) or "no sweeps")
            return
        record, analysis = _analysis(store, name)
    finally:
        store.close()
    if as_json:
        out.emit_json({"sweep": name, "status": record.status, "message": record.message,
                       "metric": analysis.default_metric, "mode": analysis.default_mode,
                       "definition": record.definition, "trials": [t.to_json() for t in analysis.trials]})
        return
    table = out.table("trial", "state", "iter", analysis.default_metric or "metric", "config", "message",
                      title=f"sweep {name}: {record.status}")
    for t in analysis.trials:
        value = (t.last_result or {}).get(analysis.default_metric) if analysis.default_metric else None
        table.add_row(t.ref, t.state, str(t.iteration), out.short(value), out.short(t.config), out.short(t.message))
    out.console().print(table)


@sweep_group.command("best")
@click.argument("name")
@json_command
def best(ctx, name, as_json):
    """The best trial of sweep NAME by its metric (last result of each trial).

    \b
    --json prints: {"sweep", "metric", "mode", "trial", "config", "result"}
    """
    store = _store(ctx)
    try:
        _record, analysis = _analysis(store, name)
    finally:
        store.close()
    if analysis.default_metric is None:
        raise CliError(f"sweep {name} has no metric, so no best trial")
    trial = analysis.get_best_trial()
    if trial is None:
        raise CliError(f"no trial of sweep {name} reported {analysis.default_metric} yet")
    doc = {"sweep": name, "metric": analysis.default_metric, "mode": analysis.default_mode, "trial": trial.ref,
           "config": trial.config, "result": trial.last_result}
    if as_json:
        out.emit_json(doc)
    else:
        click.echo(f"{trial.ref} {analysis.default_metric}={trial.last_result.get(analysis.default_metric)!r} "
                   f"config={trial.config}")


@sweep_group.command("results")
@click.argument("name")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per trial (config/... and last-result columns).")
@json_command
def results(ctx, name, as_csv, as_json):
    """Every trial's config and last result, as CSV or JSON (the default)."""
    store = _store(ctx)
    try:
        _record, analysis = _analysis(store, name)
    finally:
        store.close()
    click.echo(analysis.to_csv(), nl=False) if as_csv else out.emit_json(analysis.to_json())


def _store(ctx):
    from ..errors import NotFound  # noqa: PLC0415
    from ..sweep.state import SweepStore  # noqa: PLC0415

    try:
        return SweepStore(db_url_of(ctx, home_of(ctx)), readonly=True)
    except NotFound as exc:
        raise CliError(f"no sweeps yet ({exc})") from None


def _analysis(store, name):
    from ..sweep.results import analysis_of  # noqa: PLC0415

    record = store.sweep(name)
    definition = record.definition
    return record, analysis_of(name, definition.get("metric"), definition.get("mode"), store.trials(record.id))


def register(group) -> None:
    """Add the `sweep` command group to ``group``."""
    group.add_command(sweep_group)
