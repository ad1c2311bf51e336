"""The storage interface: bytes under a root, in named directories. It knows nothing of training.

How a directory becomes visible (atomically) is not the storage's business but its
:attr:`Storage.commit` protocol's (:mod:`.atomicity`): a rename locally, a commit marker on
object stores. Readers see only published directories; deletion makes a directory invisible
first, then removes its bytes.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import BinaryIO, Hashable

from .atomicity import CommitProtocol
from .locks import ReadLeases


class Storage(abc.ABC):
    """Directories of files under one root, published by :attr:`commit`."""

    #: Human-readable location, for messages (a path or a URL).
    location: str
    #: How staged directories are published and temporaries recognised.
    commit: CommitProtocol
    #: Read leases on published directories (see :mod:`.locks`).
    leases: ReadLeases

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Names of the published directories, in no particular order (temporaries excluded)."""

    @abc.abstractmethod
    def change_token(self) -> Hashable | None:
        """A cheap value that changes whenever :meth:`names` may have changed; None if unknown."""

    @abc.abstractmethod
    def read_bytes(self, name: str, relpath: str) -> bytes:
        """Return the content of one file of a published directory."""

    @abc.abstractmethod
    def open(self, name: str, relpath: str) -> BinaryIO:
        """Open one file of a published directory for binary reading."""

    @property
    def is_local(self) -> bool:
        """True when published directories are local folders (files are written in place; else
        they are uploaded as they are made and read through :meth:`materialize`)."""
        return self.local_dir("x") is not None

    @abc.abstractmethod
    def local_dir(self, name: str) -> Path | None:
        """The local path of a published directory when its files are on a local filesystem, else None."""

    @abc.abstractmethod
    def download(self, name: str, dest: Path) -> Path:
        """Copy a published directory into the local folder ``dest`` and return it."""

    @abc.abstractmethod
    def materialize(self, name: str) -> Path:
        """A local folder holding the files of a published directory (downloaded if need be).

        Local storage returns the directory itself; remote storage a cached copy that it
        reuses while the copy's manifest equals the published one. Blocks for the download.
        Raises StorageError (ENOENT, with a FileNotFoundError cause, when ``name`` is not published).
        """

    def forget_copy(self, name: str) -> None:
        """Drop the local copy :meth:`materialize` made (the next one downloads again); a no-op
        where the published folder is the local copy."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove a published directory; readers stop seeing it before its bytes go."""
