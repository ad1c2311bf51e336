"""Entry point of the `unbroken` command: the click group and the registration of subcommands."""

from __future__ import annotations

import click

from .. import __version__
from ._output import quiet_on_broken_pipe


class _Group(click.Group):
    """The `unbroken` group: every subcommand exits quietly (0) when stdout's reader goes away."""

    def invoke(self, ctx: click.Context):
        return quiet_on_broken_pipe(lambda: super(_Group, self).invoke(ctx))


#: Where things are: (option, environment variable, help). Each is accepted by the group
#: (`unbroken --storage URL ls`) and by every command (`unbroken ls --storage URL`).
LOCATIONS = (
    ("home", "UNBROKEN_HOME", "unbroken home folder: logs, and by default the index and checkpoints "
                              "(default: $UNBROKEN_HOME or ~/.unbroken)."),
    ("storage", "UNBROKEN_STORAGE", "where new trials keep checkpoints: a folder or a URL such as "
                                    "s3://bucket/prefix (default: $UNBROKEN_STORAGE, else the home)."),
    ("db", "UNBROKEN_DB", "the tracking index: a PostgreSQL URL or a SQLite file (default: $UNBROKEN_DB, "
                          "else unbroken.db in the home)."),
)


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Store a location option in the root context's ``obj`` (a command's value wins over the group's)."""
    root = ctx.find_root()
    root.obj = root.obj or {}
    if value is not None or param.name not in root.obj:
        root.obj[param.name] = value


def location_options(command: click.Command, *, envvar: bool) -> None:
    """Add ``--home``, ``--storage`` and ``--db`` to ``command`` (read from the environment on the group)."""
    for name, var, text in LOCATIONS:
        command.params.append(click.Option([f"--{name}"], envvar=var if envvar else None, default=None,
                                           expose_value=False, callback=_remember, is_eager=True, help=text))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="unbroken")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Fault-tolerant training: run, resume, inspect."""
    ctx.ensure_object(dict)


location_options(main, envvar=True)


def _register() -> None:
    from . import inspect, run, slurm  # noqa: PLC0415 - subcommand modules register themselves on `main`
    inspect.register(main)
    run.register(main)
    slurm.register(main)
    __import__("unbroken.cli.ui", fromlist=["register"]).register(main)
    __import__("unbroken.cli.sweep", fromlist=["register"]).register(main)
    for command in _leaves(main):
        location_options(command, envvar=False)


def _leaves(group: click.Group):
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _leaves(command)
        else:
            yield command


_register()
