"""Entry point of the `unbroken` command: the click group and the registration of subcommands."""

from __future__ import annotations

import click

from .. import __version__
from ._output import quiet_on_broken_pipe


class _Group(click.Group):
    """The `unbroken` group: every subcommand exits quietly (0) when stdout's reader goes away."""

    def invoke(self, ctx: click.Context):
        return quiet_on_broken_pipe(lambda: super(_Group, self).invoke(ctx))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="unbroken")
@click.option("--home", envvar="UNBROKEN_HOME", type=click.Path(file_okay=False), default=None,
              help="unbroken home folder (default: $UNBROKEN_HOME or ~/.unbroken).")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """Fault-tolerant training: run, resume, inspect."""
    ctx.obj = {"home": home}


def _register() -> None:
    from . import inspect, run, slurm  # noqa: PLC0415 - subcommand modules register themselves on `main`
    inspect.register(main)
    run.register(main)
    slurm.register(main)


_register()
