"""The storage interface: bytes under a root, published one directory at a time.

A backend knows nothing about training or checkpoints. It offers one atomic operation,
:meth:`Storage.publish`, which turns a *staged* local directory plus a manifest into a
*published* directory that readers can see. Before that call readers see nothing; after it
they see every file. The local filesystem does this with a rename; an object store would
upload the files and then the manifest, which acts as the commit marker.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import BinaryIO


class Storage(abc.ABC):
    """Directories of files under one root, each made visible atomically by :meth:`publish`."""

    #: Human-readable location, for messages (a path or a URL).
    location: str

    @abc.abstractmethod
    def stage(self, name: str) -> Path:
        """Create and return an empty local directory in which the files of ``name`` are written.

        Nothing written there is visible to readers until :meth:`publish` returns.
        """

    @abc.abstractmethod
    def publish(self, staged: Path, name: str, manifest_name: str, manifest: bytes) -> None:
        """Make ``staged`` visible as ``name``, with ``manifest`` written last as ``manifest_name``.

        The files in ``staged`` must be complete. On return they are durable and visible; on
        error nothing is visible and the staged files are discarded. Raises
        :class:`~unbroken.errors.StorageError` on I/O errors and if ``name`` exists already.
        """

    @abc.abstractmethod
    def discard(self, staged: Path) -> None:
        """Delete a staged directory that will not be published. Never raises for missing paths."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Names of the published directories (those with a manifest), in no particular order."""

    @abc.abstractmethod
    def read_bytes(self, name: str, relpath: str) -> bytes:
        """Return the content of one file of a published directory."""

    @abc.abstractmethod
    def open(self, name: str, relpath: str) -> BinaryIO:
        """Open one file of a published directory for binary reading."""

    @abc.abstractmethod
    def local_dir(self, name: str) -> Path | None:
        """The local path of a published directory when its files are on a local filesystem, else None."""

    @abc.abstractmethod
    def download(self, name: str, dest: Path) -> Path:
        """Copy a published directory into the local folder ``dest`` and return it."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove a published directory; readers stop seeing it first (its manifest goes first)."""

    @abc.abstractmethod
    def clean_stale(self) -> list[str]:
        """Remove staged directories left behind by writers that died; return what was removed."""
