"""From a location (a folder or a URL) to a :class:`.Storage`: the one place that reads storage URLs.

* a plain path or ``file://`` URL -> :class:`.LocalStorage`
* ``s3://bucket/prefix`` (also ``s3a``), ``gs://bucket/prefix``, ``az://container/prefix``
  (also ``azure``, ``abfs``, ``abfss``, ``adl``), ``memory://`` -> :class:`.ObjectStorage`

Object stores are configured from the standard environment only (see :mod:`.objclient`).
Opening checks nothing on the network; the first call that reaches the store raises
StorageError (naming the URL and what to check) when the bucket does not exist, the
credentials are wrong or the endpoint is unreachable.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from ..config import resolve_cache_dir, resolve_home
from ..errors import ConfigError
from .base import Storage
from .local import LocalStorage

#: URL schemes served by an object store.
OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "memory")
SUPPORTED = ("a folder path", "file://", *(f"{s}://" for s in OBJECT_SCHEMES))


def open_storage(location: str | os.PathLike[str], *, cache_dir: Path | None = None) -> Storage:
    """The storage at ``location``; its ``location`` attribute is the URL (or the folder path).

    ``cache_dir`` (object stores only: staging folders, read leases, downloaded copies) defaults
    to ``$UNBROKEN_CACHE``, else ``<home>/cache`` with home ``$UNBROKEN_HOME`` or ``~/.unbroken``;
    a caller with another home passes ``config.resolve_cache_dir(home)``. Raises ConfigError for
    an unknown scheme or a malformed URL. Blocks for nothing (no network access).
    """
    text = os.fspath(location)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the storage location is empty: give a folder or a URL such as s3://bucket/prefix")
    text = text.strip()
    if "://" not in text:
        return LocalStorage(Path(text).expanduser())
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return LocalStorage(_file_url_path(text))
    if scheme not in OBJECT_SCHEMES:
        raise ConfigError(f"unsupported storage URL scheme {scheme!r} in {text}: use one of {', '.join(SUPPORTED)}")
    from .objclient import store_from_url  # imports obstore only when an object store is used
    from .object import ObjectStorage
    url = _normalized(text, scheme)
    cache = Path(cache_dir) if cache_dir is not None else resolve_cache_dir(resolve_home())
    return ObjectStorage(store_from_url(url), url, cache)


def _file_url_path(text: str) -> Path:
    parsed = urllib.parse.urlparse(text)
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"cannot use {text}: a file:// URL must name a local path (file:///path)")
    return Path(urllib.parse.unquote(parsed.path))


def _normalized(text: str, scheme: str) -> str:
    """The URL without a trailing slash; a bucket (container) must be named, except for memory://."""
    rest = text.split("://", 1)[1].rstrip("/")
    if scheme != "memory" and not rest.split("/", 1)[0]:
        raise ConfigError(f"cannot use {text}: name the bucket, as in {scheme}://bucket/prefix")
    if "?" in rest or "#" in rest:
        raise ConfigError(f"cannot use {text}: no query or fragment allowed; configure the store "
                          "through the environment (AWS_ENDPOINT_URL, AWS_REGION, ...)")
    return f"{scheme}://{rest}" if rest else f"{scheme}://"
