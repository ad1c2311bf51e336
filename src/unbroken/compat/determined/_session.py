"""The one unbroken Run behind the Determined-style API of a process.

Determined programs ask for the cluster info (``det.get_cluster_info()``) before they open the
core context, and the singleton-style ``core_v2`` has no ``with`` block: both are served by one
Run per process, opened by whichever comes first and closed by the context (or at exit).
"""

from __future__ import annotations

import atexit
import sys
from typing import Any

from ...envvars import LaunchEnv
from ...launch.runconfig import derive_name
from ...runtime.init import init
from ...runtime.run import Run
from . import _env

_run: Run | None = None
_launch_checkpoint: str | None = None
_atexit_registered = False


def open_session(*, name: str | None = None, hparams: dict[str, Any] | None = None,
                 storage: str | None = None, fresh: bool = False) -> Run:
    """The process's Run, opened now with ``unbroken.init`` unless it is open already.

    ``name`` defaults to the supervisor's experiment, else the script's name; ``hparams`` to
    ``$UNBROKEN_DET_HPARAMS``. Under `unbroken run` the supervisor's trial is joined whatever
    the name; ``fresh`` starts a new trial (ignored there). The newest good checkpoint at this moment is kept as the launch checkpoint.
    """
    global _run, _launch_checkpoint, _atexit_registered
    if _run is not None:
        return _run
    experiment = name or LaunchEnv.from_env().experiment or derive_name(sys.argv or ["python"])
    given = hparams if hparams is not None else _env.hparams()
    _run = init(experiment, hparams=given, storage=storage, fresh=fresh)
    _launch_checkpoint = _run.checkpoint.latest_checkpoint
    if not _atexit_registered:
        atexit.register(close_session)
        _atexit_registered = True
    return _run


def current() -> Run | None:
    """The open Run, or None."""
    return _run


def launch_checkpoint() -> str | None:
    """The newest good checkpoint when the session opened (Determined's ``latest_checkpoint``)."""
    return _launch_checkpoint


def close_session(exc: BaseException | None = None) -> None:
    """Close the open Run, if any, as its ``with`` block would end with ``exc``.

    A run that stopped for a stop request raises ``SystemExit(75)`` here (EXIT_PREEMPTED), so
    the supervisor resumes it.
    """
    global _run
    run, _run = _run, None
    if run is not None:
        run.__exit__(type(exc) if exc is not None else None, exc, None)
