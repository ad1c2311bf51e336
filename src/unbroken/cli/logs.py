"""`unbroken logs TRIAL [--attempt K] [-f]`: print (or follow) the attempt logs of a trial."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..tracking import Attempt, Tracker, Trial, attempt_state
from . import _output as out
from ._output import CliError, handle_errors
from ._resolve import find_trial, home_of, open_index, paths_of

#: Seconds between two looks at a followed log file.
FOLLOW_INTERVAL = 0.5


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
    tracker = open_index(ctx, home, readonly=True)
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
    return paths_of(home, trial).attempt_log(attempt.number)


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
    """Ended, or its process is provably gone (same host, no live process with its pid and start)."""
    return attempt_state(attempt) != "running"
