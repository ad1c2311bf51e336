"""One worker of a ``TorchTrainer`` run: ``python -m unbroken.compat.ray_train._worker EXPERIMENT_FOLDER``.

Started by ``unbroken run`` (through torchrun when there are several workers). It ties its life to
its parent's (Linux ``PR_SET_PDEATHSIG``: if the launcher is killed, however hard, so is the
worker), reads the trainer's state file, imports ``train_loop_per_worker`` by reference (a
function of the driver script is imported without running its ``__main__`` block), joins the
trial with ``unbroken.init()`` (which forms the torch.distributed group), and calls the function
with ``train_loop_config`` inside a :class:`~._session.Session`.

Exit status: 0 the function returned; 75 the group agreed to stop at a report (its checkpoint is
committed); 1 (a traceback) the function raised: the supervisor restarts the whole group.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ...runtime.init import init
from ...runtime.policy import never
from ...sweep import loader
from . import _api
from ._config import CheckpointConfig
from ._session import Session, StopTraining
from ._state import TrainerState, read_state


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); exit at once if it already did."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if parent == 1 or os.getppid() != parent:
        os._exit(137)  # the launcher died before the setting took effect: no orphan


def call_train_loop(fn: Callable[..., Any], config: Any) -> Any:
    """Call ``fn(config)``, or ``fn()`` when it takes no argument (as Ray does)."""
    try:
        takes_config = len(inspect.signature(fn).parameters) > 0
    except (TypeError, ValueError):
        takes_config = True
    return fn(config if config is not None else {}) if takes_config else fn()


def retention_of(state: TrainerState):
    return CheckpointConfig(state.num_to_keep, state.score_attribute, state.score_order).retention()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m unbroken.compat.ray_train._worker EXPERIMENT_FOLDER", file=sys.stderr)
        return 2
    die_with_parent()
    state = read_state(Path(argv[0]))
    fn = loader.load(state.train_loop)
    with init(state.name, save=never(), keep=retention_of(state)) as run:
        session = Session(run, use_gpu=state.use_gpu)
        _api.set_session(session)
        try:
            session.start()
            call_train_loop(fn, state.train_loop_config)
        except StopTraining:
            pass
        finally:
            _api.set_session(None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
