"""Names and defaults shared by every layer: the home folder, names, exit codes.

The home folder holds everything unbroken writes by default::

    <home>/unbroken.db                                   tracking index (SQLite, WAL)
    <home>/experiments/<experiment>/trial-<n>/checkpoints/<uuid>/   committed checkpoints
    <home>/experiments/<experiment>/trial-<n>/logs/attempt-<k>.log  attempt logs (supervisor)

It is ``$UNBROKEN_HOME`` when set, else ``~/.unbroken``. Checkpoints may live elsewhere
(``storage=`` / ``$UNBROKEN_STORAGE``: a folder or an object-store URL), and the index too
(``$UNBROKEN_DB``: a PostgreSQL URL). The environment variables between a
supervisor and its child belong to :mod:`unbroken.envvars`; the folder layout to :mod:`unbroken.paths`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .envvars import ENV_CACHE, ENV_HOME, ENV_STORAGE
from .errors import ConfigError

#: Exit status of a training process that stopped cleanly because a stop was requested
#: (preemption, time limit): its latest state is committed and it wants to be resumed.
#: 75 is EX_TEMPFAIL of sysexits.h, "temporary failure; the user is invited to retry".
EXIT_PREEMPTED = 75

DB_FILENAME = "unbroken.db"
MANIFEST_NAME = "MANIFEST.json"
FORMAT_VERSION = 2  # the newest checkpoint format this version reads (1: plain; 2: with references)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: "$" would accept a trailing newline


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the home folder: ``home`` if given, else ``$UNBROKEN_HOME``, else ``~/.unbroken``."""
    raw = home if home is not None else os.environ.get(ENV_HOME) or Path.home() / ".unbroken"
    return Path(raw).expanduser().resolve()


def resolve_storage_root(storage: str | os.PathLike[str] | None = None) -> str | None:
    """Where new trials keep their checkpoints: ``storage`` if given, else ``$UNBROKEN_STORAGE``,
    else None (the home folder). A URL (``s3://bucket/prefix``) or a local path."""
    raw = storage if storage is not None else os.environ.get(ENV_STORAGE) or None
    if raw is None:
        return None
    text = os.fspath(raw).strip()
    if not text:
        raise ConfigError("the storage location is empty: give a folder or a URL such as s3://bucket/prefix")
    return text if "://" in text else str(Path(text).expanduser().resolve())


def resolve_cache_dir(home: Path) -> Path:
    """Where checkpoints of remote storage are downloaded: ``$UNBROKEN_CACHE``, else ``<home>/cache``."""
    raw = os.environ.get(ENV_CACHE)
    return Path(raw).expanduser().resolve() if raw else home / "cache"


def check_name(name: str, what: str = "experiment name") -> str:
    """Return ``name`` if it is usable as a folder name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name

