"""``python -m unbroken.sweep.worker``: the trial process of a Python trainable.

Run by ``unbroken run`` (restarts) for each segment of a trial, with the driver's directive in
the environment: imports the trainable (:mod:`.loader`), joins the trial, resumes from the best
checkpoint, and runs the trainable until the segment is over (see :mod:`.session`). A stop
request (SIGTERM, Slurm's signal) saves at the next iteration and exits 75.
"""

from __future__ import annotations

import inspect
import sys

from ..checkpoint import keep_latest
from ..errors import ConfigError
from ..runtime.init import init
from ..runtime.policy import never
from . import loader, session as session_mod
from .function_api import SegmentOver
from .protocol import Directive
from .session import TrialSession
from .trainable import Trainable, load_from, save_into, saves


def main() -> None:
    directive = Directive.from_env()
    if directive is None or not directive.trainable:
        raise SystemExit("unbroken.sweep.worker runs trials of a sweep; it is started by the sweep's driver")
    target = loader.load(directive.trainable)
    with init(save=never(), keep=keep_latest(directive.keep)) as run:
        session = TrialSession(run, directive)
        session_mod._CURRENT = session
        if inspect.isclass(target) and issubclass(target, Trainable):
            run_class(session, target)
        elif callable(target):
            run_function(session, target)
        else:
            raise ConfigError(f"the trainable {directive.trainable} is neither a Trainable class nor a function")
        session.finish()


def run_class(session: TrialSession, cls: type[Trainable]) -> None:
    """Drive a Trainable to the end of the segment (or a stop request)."""
    d = session.directive
    trainable = cls(session.config, trial_id=str(d.trial), trial_name=f"{d.sweep}_{d.trial}",
                    logdir=str(session.run.info.trial_dir))
    can_save = saves(cls)
    session.restore_files(lambda path, _manifest: load_from(trainable, path))
    trainable._iteration = session.iteration
    try:
        while not session.segment_over:
            if session.run.should_preempt():
                if can_save:
                    _save(session, trainable)
                return
            result = session.record(trainable.step())
            trainable._iteration = session.iteration
            if can_save and session.checkpoint_due(result):
                _save(session, trainable)
    finally:
        trainable.cleanup()


def _save(session: TrialSession, trainable: Trainable) -> None:
    with session.run.checkpoint.store_path(session.metadata()) as (path, uuid):
        save_into(trainable, path)
    session.last_checkpoint = uuid


def run_function(session: TrialSession, fn) -> None:
    """Run a function trainable until it returns (done) or its segment ends (SegmentOver)."""
    best = session.candidates()
    if best:
        session.adopt(best[0])  # the iteration count goes on from the checkpoint get_checkpoint() will give
    if session.segment_over:
        return
    try:
        fn(session.config)
    except SegmentOver:
        return
    if not session.run.should_preempt():
        session.done = True  # the function returned: the trial is finished


if __name__ == "__main__":
    sys.exit(main())
