"""The local cache folder of one remote storage: staging folders, read leases, materialized copies.

Layout, under ``<cache_dir>/<hash of the URL>/`` (:func:`cache_root`)::

    LOCATION                      the URL, for people
    <name>/                       a materialized (downloaded, complete) checkpoint
    .tmp-<name>-<pid>-<random>/   a download in progress (renamed to <name>/ when complete)
    .staging/<pid>-<random>/<name>/   files of a checkpoint being written, before upload
    .leases/<name>                read-lease files (machine-local: see docs/architecture.md)

``cache_dir`` is ``$UNBROKEN_CACHE`` when set, else ``<home>/cache`` (``config.resolve_cache_dir``).
Everything here may be deleted while no process uses it: it is rebuilt from the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

from .._proc import pid_alive
from ..errors import StorageError
from .atomicity import TEMPORARY_PREFIX
from .fsio import storage_error

STAGING = ".staging"


def cache_root(cache_dir: Path, url: str) -> Path:
    """``<cache_dir>/<16 hex digits of sha256(url)>``, created, with a LOCATION file naming ``url``."""
    root = Path(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        root.mkdir(parents=True, exist_ok=True)
        location = root / "LOCATION"
        if not location.exists():
            location.write_text(url + "\n")
    except OSError as exc:
        raise storage_error("create cache folder", root, exc) from exc
    return root


def new_staging(root: Path, name: str) -> Path:
    """A new, empty local folder ``<root>/.staging/<pid>-<random>/<name>`` (its last part is ``name``)."""
    staged = root / STAGING / f"{os.getpid()}-{secrets.token_hex(4)}" / name
    try:
        staged.mkdir(parents=True)
    except OSError as exc:
        raise storage_error("create staging folder", staged, exc) from exc
    return staged


def remove_staging(staged: Path) -> None:
    """Remove a folder made by :func:`new_staging` (and its per-writer parent). Never raises."""
    shutil.rmtree(staged, ignore_errors=True)
    if staged.parent.parent.name == STAGING:
        with contextlib.suppress(OSError):
            staged.parent.rmdir()


def clean_dead_staging(root: Path) -> None:
    """Remove local staging folders and partial downloads of processes of this host that are gone."""
    candidates = [(p, p.name) for p in _entries(root / STAGING)]
    candidates += [(p, p.name.rsplit("-", 2)[-2]) for p in _entries(root) if p.name.startswith(TEMPORARY_PREFIX)]
    for path, owner in candidates:
        pid = owner.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def materialize_into(root: Path, name: str, marker: str, marker_bytes: bytes,
                     download: Callable[[Path], None]) -> Path:
    """Return ``<root>/<name>``, a complete local copy whose ``marker`` file holds ``marker_bytes``.

    A cached copy with those marker bytes is reused. Otherwise ``download(tmp)`` fills a new
    temporary folder (everything but the marker), the marker is written last, and the folder
    is renamed into place, replacing an outdated copy; a copy another process completed
    meanwhile is used instead. Blocks for the download; raises StorageError.
    """
    final = root / name
    if _marker_matches(final, marker, marker_bytes):
        return final
    tmp = root / f"{TEMPORARY_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        download(tmp)
        (tmp / marker).write_bytes(marker_bytes)
        _swap_in(tmp, final, marker, marker_bytes)
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error("download into", tmp, exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _swap_in(tmp: Path, final: Path, marker: str, marker_bytes: bytes) -> None:
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if _marker_matches(final, marker, marker_bytes):
            return  # another process materialized the same checkpoint meanwhile
    old = final.with_name(f"{TEMPORARY_PREFIX}{final.name}-old-{os.getpid()}-{secrets.token_hex(4)}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(final, old)
    shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, final)


def _marker_matches(folder: Path, marker: str, marker_bytes: bytes) -> bool:
    try:
        return (folder / marker).read_bytes() == marker_bytes
    except OSError:
        return False


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []
