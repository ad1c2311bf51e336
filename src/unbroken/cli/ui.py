"""`unbroken ui`: serve the web dashboard (needs the extra: pip install 'unbroken[ui]')."""

from __future__ import annotations

import threading
import webbrowser

import click

from ..errors import ConfigError
from ._output import CliError, handle_errors
from ._resolve import db_url_of, home_of

EXTRA_HINT = "`unbroken ui` needs the web extra: pip install 'unbroken[ui]' (starlette and uvicorn)"


def register(group: click.Group) -> None:
    group.add_command(ui)


def _require_extra() -> None:
    try:
        import starlette  # noqa: F401, PLC0415
        import uvicorn  # noqa: F401, PLC0415
    except ImportError as exc:
        raise CliError(f"{EXTRA_HINT}; missing: {exc.name}") from None


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback requires the token on every request.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a web browser.")
@click.option("--token", envvar="UNBROKEN_UI_TOKEN", default=None,
              help="Token to require (default: $UNBROKEN_UI_TOKEN, else a random one printed in the URL).")
@click.option("--read-only", is_flag=True, help="Refuse every action (verify, export): only show.")
@click.pass_context
@handle_errors
def ui(ctx: click.Context, host: str, port: int, open_browser: bool, token: str | None, read_only: bool) -> None:
    """Serve a web dashboard of the home: runs, metrics, restarts, checkpoints, live logs.

    It listens on 127.0.0.1 unless --host says otherwise; then every request needs the token.
    The URL printed at the start carries the token (actions such as verify always need it).
    The index is opened read-only; only verify and export write, and --read-only turns them off.
    """
    _require_extra()
    from ..server.config import ServerConfig  # noqa: PLC0415 - only with the extra
    from ..server.run import serve  # noqa: PLC0415
    try:
        home = home_of(ctx)
        config = ServerConfig.build(home, host=host, port=port, token=token, read_only=read_only,
                                    db=db_url_of(ctx, home))
    except ConfigError as exc:
        raise CliError(str(exc)) from None

    def started(url: str) -> None:
        click.echo(f"unbroken ui: serving {config.home} at {url}", err=True)
        click.echo(url)
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    serve(config, started)
