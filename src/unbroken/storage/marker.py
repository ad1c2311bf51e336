"""Publishing on object stores: upload the files, then the manifest as a create-only commit marker.

Object stores have no atomic rename of a folder, but a single object appears atomically and a
conditional put (``If-None-Match: *``) creates it only if it does not exist. A checkpoint
``name`` is the objects under ``<prefix>/<name>/``; it is committed exactly when its manifest
object exists. Readers list manifests only (:meth:`.ObjectStorage.names`), so files uploaded
without a manifest are invisible.

``<name>/.writer`` (:data:`WRITER`) records who writes (or deletes) ``name``: host, pid, process
start time, time. It is created create-only by :meth:`MarkerCommit.stage`, so a second writer
of the same name is refused before it uploads anything, and stays with the committed
checkpoint; :meth:`MarkerCommit.stale` uses it to recognise uploads whose writer is gone.

Threads: every method blocks the calling thread on network I/O; any thread may call them.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterable

from .._proc import ProcessIdentity, identity_alive
from ..config import MANIFEST_NAME
from ..errors import ConfigError, StorageError
from .atomicity import FOREIGN_STALE_SECONDS, CommitProtocol, check_entry_name, check_relpath
from .cache import STAGING, clean_dead_staging, new_staging, remove_staging
from .fsio import storage_error
from .objclient import ObjectClient

#: The writer record of a checkpoint (not a checkpoint file; never downloaded).
WRITER = ".writer"
#: Local files uploaded at once by :meth:`MarkerCommit.finish` (each large one in parallel parts).
FILE_CONCURRENCY = 4


def writer_record(state: str) -> bytes:
    """The record of this process as a writer (``state`` "writing") or deleter ("deleting")."""
    me = ProcessIdentity.current()
    return json.dumps({"host": me.host, "pid": me.pid, "start_time": me.start_time, "time": time.time(),
                       "state": state}).encode()


def parse_record(data: bytes | None) -> dict | None:
    try:
        record = json.loads(data) if data else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def remove_objects(client: ObjectClient, name: str, keys: Iterable[str], marker: str = MANIFEST_NAME) -> None:
    """Delete the objects ``keys`` of ``name``: the marker first, the writer record last."""
    keys = set(keys)
    first, last = f"{name}/{marker}", f"{name}/{WRITER}"
    if first in keys:
        client.delete([first])
    client.delete(sorted(keys - {first, last}))
    if last in keys:
        client.delete([last])


class MarkerCommit(CommitProtocol):
    """Stage locally (under ``cache``), upload, then put the manifest create-only; see the module docstring."""

    def __init__(self, client: ObjectClient, cache: Path, marker: str = MANIFEST_NAME):
        self.client = client
        self.cache = Path(cache)
        self.marker = marker
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._abandoned: set[str] = set()  # names this process failed to publish (stale at once)

    # -- writing ---------------------------------------------------------------------------
    def stage(self, name: str) -> Path:
        """Claim ``name`` on the store (create-only writer record) and return a new local folder.

        Raises StorageError EEXIST when ``name`` is committed or being written already.
        """
        check_entry_name(name)
        if self.client.exists(f"{name}/{self.marker}"):
            raise StorageError(errno.EEXIST, f"cannot stage {self.client.where(name)}: it exists already")
        try:
            self.client.put(f"{name}/{WRITER}", writer_record("writing"), create=True)
        except StorageError as exc:
            if exc.errno != errno.EEXIST:
                raise
            raise StorageError(errno.EEXIST, f"cannot stage {self.client.where(name)}: it exists already "
                               f"(being written or deleted: {self._who(name)})") from None
        return new_staging(self.cache, name)

    def put_staged(self, staged: Path, relpath: str, data: bytes | memoryview) -> None:
        """Upload one file straight to ``<name>/<relpath>`` (``name`` = ``staged.name``); no local copy."""
        name = Path(staged).name
        self.client.put(f"{name}/{self._check_file(relpath)}", data)

    def finish(self, staged: Path, name: str, manifest_name: str, manifest: bytes,
               unsynced: Iterable[str] = ()) -> None:
        """Upload every file of the local ``staged`` folder, then the manifest create-only.

        ``unsynced`` is ignored: an uploaded object is durable when its put returns. On error
        nothing becomes visible; uploaded objects are removed (best effort, unless another
        writer's manifest exists); the local folder is removed in every case.
        """
        check_entry_name(name)
        try:
            self._upload_folder(Path(staged), name)
            self._put_marker(name, manifest_name, manifest)
        except BaseException:
            self._give_up(name)
            raise
        finally:
            remove_staging(Path(staged))

    def discard(self, staged: Path) -> None:
        """Remove the local folder and, best effort, what was uploaded for it. Never raises."""
        staged = Path(staged)
        remove_staging(staged)
        if staged.parent.parent.name == STAGING:
            self._give_up(staged.name)

    # -- temporaries -------------------------------------------------------------------------
    def stale(self) -> list[str]:
        """Names with objects but no manifest whose writer is gone (one listing, one GET per candidate)."""
        return sorted(self._stale_in(_group_by_name(self.client.list())))

    def clean_stale(self) -> list[str]:
        """Remove the objects of :meth:`stale` names (and dead local staging folders); return the names."""
        clean_dead_staging(self.cache)
        groups = _group_by_name(self.client.list())
        removed = []
        for name in sorted(self._stale_in(groups)):
            remove_objects(self.client, name, groups[name], self.marker)
            with self._lock:
                self._abandoned.discard(name)
            removed.append(name)
        return removed

    # -- helpers -------------------------------------------------------------------------------
    def _check_file(self, relpath: str) -> str:
        check_relpath(relpath)
        if relpath in (self.marker, WRITER):
            raise ConfigError(f"cannot write {relpath} into a checkpoint: the name is reserved")
        return relpath

    def _upload_folder(self, staged: Path, name: str) -> None:
        files = [(rel, path) for rel, path in _local_files(staged)]
        for rel, _ in files:
            self._check_file(rel)

        def upload(item: tuple[str, Path]) -> None:
            self.client.put(f"{name}/{item[0]}", item[1])

        with concurrent.futures.ThreadPoolExecutor(FILE_CONCURRENCY, thread_name_prefix="unbroken-put") as pool:
            for future in [pool.submit(upload, item) for item in files]:
                future.result()

    def _put_marker(self, name: str, manifest_name: str, manifest: bytes) -> None:
        key = f"{name}/{manifest_name}"
        try:
            self.client.put(key, manifest, create=True)
        except StorageError as exc:
            if exc.errno != errno.EEXIST:
                raise
            if self._existing(key) == bytes(manifest):
                return  # our own put succeeded, its answer was lost, and the retry was refused
            raise StorageError(errno.EEXIST, f"cannot publish {self.client.where(name)}: it exists already "
                               "(another writer committed it; its manifest is kept)") from None

    def _give_up(self, name: str) -> None:
        """Best effort: remove what was uploaded for ``name`` unless a manifest exists. Never raises."""
        try:
            keys = [o["path"] for o in self.client.list(f"{name}/")]
            if f"{name}/{self.marker}" not in keys:  # else committed (by another writer, or by us with a
                remove_objects(self.client, name, keys, self.marker)  # lost answer): not ours to remove
        except StorageError:
            with self._lock:  # unreachable store: stale() lists the leftovers, clean_stale() removes them
                self._abandoned.add(name)

    def _existing(self, key: str) -> bytes | None:
        try:
            return self.client.get(key)
        except StorageError:
            return None

    def _who(self, name: str) -> str:
        record = parse_record(self._existing(f"{name}/{WRITER}")) or {}
        since = record.get("time")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
        return f"pid {record.get('pid', '?')} on host {record.get('host', '?')} since {when}"

    def _stale_in(self, groups: dict[str, dict[str, dict]]) -> list[str]:
        return [name for name, objects in groups.items()
                if f"{name}/{self.marker}" not in objects and self._is_stale(name, objects)]

    def _is_stale(self, name: str, objects: dict[str, dict]) -> bool:
        with self._lock:
            if name in self._abandoned:
                return True
        record = parse_record(self._existing(f"{name}/{WRITER}")) if f"{name}/{WRITER}" in objects else None
        pid = record.get("pid") if record else None
        if record and record.get("host") == self._host and isinstance(pid, int):
            return not identity_alive(pid, record.get("start_time"))  # this process: alive, so not stale
        since = record.get("time") if record else None
        if not isinstance(since, (int, float)):
            since = max((o["last_modified"].timestamp() for o in objects.values()), default=0.0)
        return time.time() - since > FOREIGN_STALE_SECONDS


def _group_by_name(objects: Iterable[dict]) -> dict[str, dict[str, dict]]:
    """``{name: {key: meta}}`` for every object ``<name>/...`` of a listing."""
    groups: dict[str, dict[str, dict]] = {}
    for meta in objects:
        name, sep, _ = meta["path"].partition("/")
        if sep:
            groups.setdefault(name, {})[meta["path"]] = meta
    return groups


def _local_files(root: Path) -> list[tuple[str, Path]]:
    """(relpath, path) of every regular file below ``root``; links and special files are refused."""
    out = []
    try:
        for dirpath, _dirs, files in os.walk(root):
            for file in files:
                path = Path(dirpath) / file
                if not path.is_file() or path.is_symlink():
                    raise ConfigError(f"cannot upload {path}: only regular files are allowed in a checkpoint")
                out.append((path.relative_to(root).as_posix(), path))
    except OSError as exc:
        raise storage_error("read", root, exc) from exc
    return sorted(out)
