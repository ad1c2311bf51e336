"""The exceptions and warnings unbroken raises.

Every error the library raises on purpose derives from :class:`UnbrokenError`, so callers can
catch the whole family with one clause::

    UnbrokenError
     ├── ConfigError              bad arguments or environment; the message says what to change
     ├── StorageError             reading or writing bytes failed (disk full, permission, I/O)
     ├── CheckpointError          a checkpoint cannot be used
     │    ├── CheckpointNotFound       no checkpoint with that id (or no checkpoint at all)
     │    │    └── CheckpointGone          it was deleted (by retention or gc) while being read
     │    ├── CorruptCheckpoint        the files do not match the manifest (or the manifest is bad)
     │    │    ├── UnsafePathError         a manifest names a path outside its directory
     │    │    └── TensorFileError         a tensor file is not a valid safetensors file
     │    ├── UnsupportedFormatVersion written by a newer unbroken: upgrade to read it (not corrupt)
     │    ├── PickleNotAllowed         restoring would execute pickle and the caller did not opt in
     │    ├── StateMismatch            the saved state does not fit the objects it is loaded into
     │    ├── UnsupportedValue         a value in a State cannot be saved (type, dtype, range)
     │    └── BackgroundSaveError      an asynchronous save failed; raised at the next call
     ├── TrackingError            the tracking index (SQLite) cannot be read or written
     │    └── NotFound                 no experiment / trial / attempt with that name or id
     │         └── TrialNotFound           no trial with that name or number
     ├── TrialBusy                another live process writes this trial (the message names it)
     └── LaunchError              the supervisor or a scheduler could not start or control a job

    UnbrokenWarning
     ├── CorruptCheckpointWarning  a checkpoint failed verification and was skipped
     └── IndexWarning              the tracking index could not be written; the run goes on
"""

from __future__ import annotations


class UnbrokenError(Exception):
    """Root of every error unbroken raises on purpose."""


class ConfigError(UnbrokenError, ValueError):
    """Bad arguments, configuration or environment."""


class StorageError(UnbrokenError, OSError):
    """Reading or writing bytes failed; nothing committed before the failure was touched."""


class CheckpointError(UnbrokenError):
    """A checkpoint cannot be used."""


class CheckpointNotFound(CheckpointError, LookupError):
    """No checkpoint with that id, or no checkpoint at all."""


class CheckpointGone(CheckpointNotFound):
    """The checkpoint was deleted (retention, ``gc``, another process) while it was being read.

    Not a sign of damage: readers report it as gone, never as corrupt.
    """


class UnsupportedFormatVersion(CheckpointError):
    """The checkpoint was written in a newer format than this unbroken reads; upgrade unbroken."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint's files do not match its manifest, or its manifest is invalid."""


class UnsafePathError(CorruptCheckpoint):
    """A manifest names a path that is absolute or leaves the checkpoint directory."""


class TensorFileError(CorruptCheckpoint):
    """A tensor file is not a valid safetensors file."""


class PickleNotAllowed(CheckpointError):
    """Restoring would execute pickle, and the caller did not opt in with ``allow_pickle=True``."""


class StateMismatch(CheckpointError):
    """The saved state does not fit the objects it is being loaded into."""


class UnsupportedValue(CheckpointError, ValueError):
    """A value handed to a save cannot be stored (its type, dtype or range); the message names it."""


class BackgroundSaveError(CheckpointError):
    """An asynchronous save failed in the background; the cause is chained.

    Nothing of that save was committed; earlier checkpoints are intact.
    """


class TrackingError(UnbrokenError):
    """The tracking index cannot be read or written."""


class NotFound(TrackingError, LookupError):
    """No experiment, trial or attempt with that name or id."""


class TrialNotFound(NotFound):
    """No trial with that experiment name and number."""


class TrialBusy(UnbrokenError):
    """Another live process (named in the message: host, pid, since when) is writing this trial."""


class LaunchError(UnbrokenError):
    """The supervisor or a scheduler could not start or control a job."""


class UnbrokenWarning(UserWarning):
    """Root of the warnings unbroken emits."""


class CorruptCheckpointWarning(UnbrokenWarning):
    """A checkpoint failed verification and was skipped; the message names its uuid."""


class IndexWarning(UnbrokenWarning):
    """The tracking index could not be written; the run goes on (``unbroken reindex`` catches up)."""
