"""Which tracking database to use, named by a URL: the one owner of that choice.

``sqlite:///PATH`` (or a plain path) is a SQLite file; ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``
a PostgreSQL database (driver psycopg 3, the ``unbroken[postgres]`` extra). Pure functions of
strings and the environment, safe from any thread; importing this module imports no database code.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from ..config import DB_FILENAME
from ..envvars import ENV_DB
from ..errors import ConfigError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
#: URL schemes accepted for PostgreSQL (all use psycopg 3).
_PG_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


def resolve_db_url(db: str | os.PathLike[str] | None, home: Path) -> str:
    """The URL of the tracking database: ``db`` if given, else ``$UNBROKEN_DB``, else the SQLite
    file ``<home>/unbroken.db``. A plain path becomes ``sqlite:///PATH``; ConfigError for an
    empty value or an unsupported URL."""
    raw = db if db is not None else os.environ.get(ENV_DB) or None
    if raw is None:
        return sqlite_url(Path(home) / DB_FILENAME)
    return to_url(raw)


def to_url(db: str | os.PathLike[str]) -> str:
    """``db`` as a database URL: a URL as it is (ConfigError if unsupported), a path as ``sqlite:///PATH``."""
    text = os.fspath(db).strip() if isinstance(db, str) else os.fspath(db)
    if not text:
        raise ConfigError(f"the tracking database is empty: give a path, sqlite:///PATH or postgresql://... "
                          f"(--db or ${ENV_DB})")
    if "://" not in text:
        return sqlite_url(Path(text).expanduser())
    backend_of(text)  # refuse unsupported schemes now, not at the first write
    return text


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """``sqlite:///PATH`` (``sqlite:////ABSOLUTE/PATH``), the path percent-encoded."""
    return "sqlite:///" + urllib.parse.quote(os.fspath(path))


def backend_of(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a database URL; ConfigError for anything else."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == SQLITE:
        return SQLITE
    if scheme in _PG_SCHEMES:
        return POSTGRESQL
    raise ConfigError(f"unsupported tracking database {mask_password(url)!r}: use a path, sqlite:///PATH or "
                      "postgresql://USER@HOST:PORT/DATABASE")


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL (``sqlite:////abs/path`` for an absolute path)."""
    rest = url.split("://", 1)[1]
    if not rest.startswith("/") or rest == "/" or "?" in rest:
        raise ConfigError(f"a SQLite URL names a file: sqlite:///PATH (sqlite:////ABSOLUTE/PATH), not {url!r}")
    return Path(urllib.parse.unquote(rest[1:]))


def postgresql_url(url: str) -> str:
    """``url`` with the psycopg 3 driver named, as SQLAlchemy wants it."""
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def mask_password(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: what messages may print."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an unreadable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def location(url: str) -> str:
    """How messages name the database: the path of a SQLite file, the masked URL otherwise."""
    return str(sqlite_path(url)) if backend_of(url) == SQLITE else mask_password(url)
