"""Where checkpoint bytes live: a small interface, its commit protocols and its backends."""

from .atomicity import CommitProtocol, RenameCommit
from .base import Storage
from .local import LocalStorage

__all__ = ["CommitProtocol", "LocalStorage", "RenameCommit", "Storage"]
