"""What a checkpoint is: manifest, store and commit protocol, State, tensor files, retention."""

from .manifest import FileEntry, Manifest
from .retention import RetentionPolicy, keep_all, keep_best, keep_every, keep_latest
from .state import State
from .store import CheckpointStore, PendingCheckpoint

__all__ = [
    "CheckpointStore", "FileEntry", "Manifest", "PendingCheckpoint", "RetentionPolicy", "State",
    "keep_all", "keep_best", "keep_every", "keep_latest",
]
