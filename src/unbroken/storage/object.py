"""Object-store storage (S3, GCS, Azure, memory): checkpoint ``name`` is the objects ``<prefix>/<name>/...``.

Published by :class:`.MarkerCommit` (the manifest object is the commit marker). Listing is one
paginated LIST of the prefix; a name is visible only while its manifest object exists.

Read leases are ``flock`` files in the local cache folder, so they protect a checkpoint only
from deleters on the same machine (retention of this process, ``gc`` run here). A deleter on
another machine does not see them: there, a reader can lose a checkpoint it is reading and gets
a StorageError (ENOENT) or, for a materialized copy, keeps reading its local copy.

Threads: every method blocks the calling thread on network I/O; any thread may call them.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import BinaryIO, Hashable

from ..config import MANIFEST_NAME
from ..errors import ConfigError, StorageError
from .atomicity import check_entry_name, check_relpath
from .base import Storage
from .cache import cache_root, materialize_into
from .fsio import storage_error
from .locks import ReadLeases
from .marker import WRITER, MarkerCommit, remove_objects, writer_record
from .objclient import ObjectClient
from .objio import download_file, open_object, read_object, safe_relpath


class ObjectStorage(Storage):
    """Checkpoints under one object-store URL; local staging, leases and copies under ``cache_dir``.

    ``store`` is an obstore store whose keys are relative to ``url`` (see :func:`.url.open_storage`).
    """

    def __init__(self, store, url: str, cache_dir: Path, marker: str = MANIFEST_NAME):
        self.location = url
        self.client = ObjectClient(store, self.location)
        self.cache = cache_root(Path(cache_dir), self.location)
        self.marker = marker
        self.commit = MarkerCommit(self.client, self.cache, marker)
        self.leases = ReadLeases(self.cache)

    def names(self) -> list[str]:
        """Names whose manifest object exists (one listing; uploads without a manifest are invisible)."""
        names = []
        for meta in self.client.list():
            name, _, rest = meta["path"].partition("/")
            if rest == self.marker and _plain_name(name):
                names.append(name)
        return names

    def change_token(self) -> Hashable | None:
        return None

    def read_bytes(self, name: str, relpath: str) -> bytes:
        """The whole object (StorageError ENOENT, with a FileNotFoundError cause, if it does not exist).

        Objects over 16 MiB are fetched in parallel ranges and returned as a ``bytearray``.
        """
        return read_object(self.client, self._key(name, relpath))

    def open(self, name: str, relpath: str) -> BinaryIO:
        """A buffered, seekable reader: ranged GETs of the version that existed when opened."""
        return open_object(self.client, self._key(name, relpath))

    def local_dir(self, name: str) -> Path | None:
        return None

    def download(self, name: str, dest: Path) -> Path:
        """Download every object of ``name`` (not the writer record) into ``dest``; return ``dest``.

        Raises StorageError for an object key that would leave ``dest`` (``..``, absolute,
        backslash), for a name with no objects (ENOENT), and for I/O errors.
        """
        return self._download(name, Path(dest), {WRITER})

    def materialize(self, name: str) -> Path:
        """A complete local copy in ``<cache>/<name>/``, reused while its manifest equals the remote one."""
        check_entry_name(name)
        manifest = self.read_bytes(name, self.marker)

        return materialize_into(self.cache, name, self.marker, manifest,
                                lambda tmp: self._download(name, tmp, {WRITER, self.marker}))

    def forget_copy(self, name: str) -> None:
        check_entry_name(name)
        shutil.rmtree(self.cache / name, ignore_errors=True)

    def delete(self, name: str) -> None:
        """Manifest first (readers stop seeing it), then the other objects; the writer record last.

        A deleter that dies midway leaves objects without a manifest, recognised by the writer
        record it wrote first (see :meth:`.MarkerCommit.stale`). Also drops the local copy.
        """
        check_entry_name(name)
        keys = [meta["path"] for meta in self.client.list(f"{name}/")]
        if keys:
            self.client.put(f"{name}/{WRITER}", writer_record("deleting"))
            remove_objects(self.client, name, keys + [f"{name}/{WRITER}"], self.marker)
        self.forget_copy(name)

    def _download(self, name: str, dest: Path, skip: set[str]) -> Path:
        check_entry_name(name)
        objects = [(meta["path"][len(name) + 1:], meta) for meta in self.client.list(f"{name}/")]
        if not objects:
            raise self._missing(name)
        for rel, meta in objects:
            if rel not in skip:
                self._fetch(meta, dest, safe_relpath(rel, self.client.where(name)))
        return dest

    def _key(self, name: str, relpath: str) -> str:
        check_entry_name(name)
        return f"{name}/{check_relpath(relpath)}"

    def _missing(self, name: str) -> StorageError:
        err = StorageError(errno.ENOENT, f"cannot download {self.client.where(name)}: no such checkpoint")
        err.__cause__ = FileNotFoundError(errno.ENOENT, "no such checkpoint", name)
        return err

    def _fetch(self, meta: dict, dest: Path, rel: str) -> None:
        target = dest / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise storage_error("create", target.parent, exc) from exc
        download_file(self.client, meta["path"], int(meta["size"]), target)


def _plain_name(name: str) -> bool:
    """True for a name :func:`.check_entry_name` accepts (others are not checkpoints of ours)."""
    try:
        check_entry_name(name)
    except ConfigError:
        return False
    return True
