"""Output helpers of the command-line tool: errors, JSON, rich tables, progress bars, formats.

Human output goes to stdout through rich; progress bars and notes go to stderr, so that
``unbroken verify ... --json | jq`` stays clean. Times in JSON are Unix seconds (floats);
sizes are bytes (ints).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import io
import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Iterator

import click
from rich import box
from rich.console import Console
from rich.table import Table

from ..errors import UnbrokenError

#: Rows wider than this wrap even when stdout is a file or a pipe (so greps see whole rows).
_PIPE_WIDTH = 250


class CliError(click.ClickException):
    """A failure the user can act on: one line on stderr, exit status 1, no traceback."""


def handle_errors(command: Callable) -> Callable:
    """Turn unbroken's errors (and OS errors) raised by ``command`` into one-line CLI errors.

    A closed stdout (``BrokenPipeError``) is not an error of the command: it passes through to
    the group, which exits quietly (see :func:`quiet_on_broken_pipe`).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            raise
        except (UnbrokenError, OSError) as exc:
            raise CliError(one_line(str(exc))) from None

    return wrapper


def quiet_on_broken_pipe(body: Callable[[], Any]) -> Any:
    """Run ``body()``; when the reader of stdout went away (``unbroken logs X | head``), exit 0.

    The usual Python idiom: stdout is pointed at /dev/null, so that the interpreter's final flush
    of what is still buffered cannot fail again ("Exception ignored ... BrokenPipeError"), and
    the command ends with status 0 and nothing on stderr.
    """
    try:
        result = body()
        sys.stdout.flush()  # fail here, inside the guard, rather than at interpreter exit
        return result
    except BrokenPipeError:
        _stdout_to_devnull()
        raise click.exceptions.Exit(0) from None


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (tests' CliRunner)
        pass


def json_option(command: Callable) -> Callable:
    """The ``--json`` flag shared by every inspection command."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (stable shape, see the help).")(command)


def json_command(command: Callable) -> Callable:
    """What every command with ``--json`` takes, innermost last: the flag (``as_json``), the click
    context as first argument, and one-line errors (:func:`handle_errors`)."""
    return json_option(click.pass_context(handle_errors(command)))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


class _Console(Console):
    """rich's Console, but a closed stdout raises BrokenPipeError (rich would exit with status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr), wide when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return _Console(file=stream, highlight=False, soft_wrap=False, width=None if terminal else _PIPE_WIDTH)


def note(message: str) -> None:
    """A remark for people, on stderr (never mixed into JSON on stdout)."""
    click.echo(message, err=True)


def table(*columns: str, title: str | None = None) -> Table:
    return Table(*columns, box=box.SIMPLE_HEAD, title=title, title_justify="left", title_style="bold",
                 show_edge=False, pad_edge=False, min_width=len(title) if title else None)  # title on one line


@contextlib.contextmanager
def byte_progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(nbytes)``; draws a transient progress bar on stderr when it is a terminal."""
    err = console(stderr=True)
    if not err.is_terminal or total <= 0:
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


# -- formats -----------------------------------------------------------------------------------
def size(nbytes: int | None) -> str:
    if nbytes is None:
        return "-"
    if nbytes < 1024:
        return f"{nbytes} B"
    value = nbytes / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(0.0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def age(timestamp: float | None, now: float | None = None) -> str:
    if timestamp is None:
        return "-"
    return f"{duration((now or time.time()) - timestamp)} ago"


def when(timestamp: float | None) -> str:
    """Local date and time, to the second."""
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def exit_status(exit_code: int | None, signal_number: int | None) -> str:
    if signal_number:
        try:
            return f"signal {signal_number} ({signal.Signals(signal_number).name})"
        except ValueError:
            return f"signal {signal_number}"
    return "-" if exit_code is None else str(exit_code)


def short(value: Any, limit: int = 60) -> str:
    text = one_line(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"metrics": {"loss": 1}}`` -> ``{"metrics.loss": 1}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def summary(metadata: dict[str, Any], limit: int = 60) -> str:
    """A one-line ``key=value, ...`` view of checkpoint metadata."""
    items = flat(metadata)
    if not items:
        return "-"
    return short(", ".join(f"{k}={_scalar(v)}" for k, v in items.items()), limit)


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


#: Eight heights of a sparkline, lowest first.
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int = 16) -> str:
    """The shape of ``values`` in at most ``width`` block characters (▁ lowest … █ highest).

    Missing and non-finite values are left out; with more values than ``width`` each character
    shows the mean of an equal share of them, in order. A flat series is drawn at mid height;
    no values give "".
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(finite) > width:
        n = len(finite)
        shares = (finite[i * n // width:(i + 1) * n // width] for i in range(width))
        finite = [sum(share) / len(share) for share in shares]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    if high == low:
        return _BARS[3] * len(finite)
    top = len(_BARS) - 1
    return "".join(_BARS[round((v - low) / (high - low) * top)] for v in finite)


def number(value: float | None) -> str:
    """A metric value, short: 6 significant digits; "-" when missing."""
    return "-" if value is None else f"{value:.6g}"
