"""What a checkpoint is: manifest, store and commit protocol, State, tensor files, retention."""

from .format.manifest import FileEntry, Manifest
from .store.retention import RetentionPolicy, keep_all, keep_best, keep_every, keep_latest
from .saving.state import State
from .store.catalog import CheckpointStore
from .store.pending import PendingCheckpoint

__all__ = [
    "CheckpointStore", "FileEntry", "Manifest", "PendingCheckpoint", "RetentionPolicy", "State",
    "keep_all", "keep_best", "keep_every", "keep_latest",
]
