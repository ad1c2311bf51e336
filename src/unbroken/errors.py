"""The exceptions and warnings unbroken raises.

Every error the library raises on purpose derives from :class:`UnbrokenError`, so callers can
catch the whole family with one clause::

    UnbrokenError
     ├── ConfigError              bad arguments or environment; the message says what to change
     ├── StorageError             reading or writing bytes failed (disk full, permission, I/O)
     ├── CheckpointError          a checkpoint cannot be used
     │    ├── CheckpointNotFound       no checkpoint with that id (or no checkpoint at all)
     │    ├── CorruptCheckpoint        the files do not match the manifest (or the manifest is bad)
     │    ├── UnsafePathError          a manifest names a path outside its directory
     │    ├── TensorFileError          a tensor file is not a valid safetensors file
     │    ├── PickleNotAllowed         restoring would execute pickle and the caller did not opt in
     │    └── StateMismatch            the saved state does not fit the objects it is loaded into
     ├── TrackingError            the tracking index (SQLite) cannot be read or written
     │    └── NotFound                 no experiment / trial / attempt with that name or id
     ├── BackgroundSaveError      an asynchronous save failed; raised at the next call
     └── LaunchError              the supervisor or a scheduler could not start or control a job

    UnbrokenWarning
     └── CorruptCheckpointWarning  a checkpoint failed verification and was skipped
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


class TrackingError(UnbrokenError):
    """The tracking index cannot be read or written."""


class NotFound(TrackingError, LookupError):
    """No experiment, trial or attempt with that name or id."""


class BackgroundSaveError(UnbrokenError):
    """An asynchronous save failed in the background; the cause is chained."""


class LaunchError(UnbrokenError):
    """The supervisor or a scheduler could not start or control a job."""


class UnbrokenWarning(UserWarning):
    """Root of the warnings unbroken emits."""


class CorruptCheckpointWarning(UnbrokenWarning):
    """A checkpoint failed verification and was skipped; the message names its uuid."""
