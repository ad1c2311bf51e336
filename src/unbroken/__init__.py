"""unbroken: fault-tolerant long-running training.

Atomic, verified checkpoints; automatic resume from the newest good one; clean stops on
preemption and time limits; metrics and the history of every attempt. Start with::

    import unbroken

    with unbroken.init(name="cifar", hparams={"lr": 0.1}) as run:
        state = unbroken.State(model=model, optimizer=opt)
        start = run.restore(state)
        for step in run.steps(start, total):
            ...
            run.report(step + 1, loss=loss)
"""

from .checkpoint import State, keep_all, keep_best, keep_every, keep_latest
from .config import EXIT_PREEMPTED
from .errors import (
    BackgroundSaveError, CheckpointError, CheckpointGone, CheckpointNotFound, ConfigError, CorruptCheckpoint,
    CorruptCheckpointWarning, IndexWarning, LaunchError, NotFound, PickleNotAllowed, StateMismatch, StorageError,
    TensorFileError, TrackingError, TrialBusy, TrialNotFound, UnbrokenError, UnbrokenWarning, UnsafePathError,
    UnsupportedFormatVersion, UnsupportedValue,
)
from .runtime.interval import auto_interval
from .runtime.policy import every_seconds, every_steps, never
from .runtime.init import init
from .runtime.run import Run, RunInfo

__version__ = "0.1.0"


def __getattr__(name: str):
    # torch-dependent helpers are imported on first use, so `import unbroken` never imports torch.
    if name == "ResumableLoader":
        from .runtime.data import ResumableLoader
        return ResumableLoader
    raise AttributeError(f"module 'unbroken' has no attribute {name!r}")

__all__ = [
    "EXIT_PREEMPTED", "ResumableLoader", "Run", "RunInfo", "State", "__version__", "auto_interval",
    "every_seconds", "every_steps", "init", "keep_all", "keep_best", "keep_every", "keep_latest", "never",
    "BackgroundSaveError", "CheckpointError", "CheckpointGone", "CheckpointNotFound", "ConfigError",
    "CorruptCheckpoint", "CorruptCheckpointWarning", "IndexWarning", "LaunchError", "NotFound", "PickleNotAllowed",
    "StateMismatch", "StorageError", "TensorFileError", "TrackingError", "TrialBusy", "TrialNotFound",
    "UnbrokenError", "UnbrokenWarning", "UnsafePathError", "UnsupportedFormatVersion", "UnsupportedValue",
]
