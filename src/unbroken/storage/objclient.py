"""The one door to the object-store client (obstore): store construction, timeouts, error mapping.

Every call goes through :class:`ObjectClient`, which turns obstore's exceptions into
:class:`~unbroken.errors.StorageError` (via :func:`.fsio.object_store_error`) naming the URL.

Only obstore's *synchronous* API is used: mixing its sync and async calls made processes abort
(SIGABRT) at exit. Calls block the calling thread and release the GIL while they wait, so they
may be made from any thread, several at once.

obstore is not fork-safe: a child forked after the parent used it hangs on its first call,
even with a new store. A client used in a forked child therefore raises StorageError at once
(start such children with ``spawn`` or ``forkserver``, or open the storage before forking).

Credentials, endpoint and region come from the standard environment only (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``; ``GOOGLE_*``,
``AZURE_*``), read by obstore itself; never from a checkpoint or the index.

Time limits (a dead endpoint fails in seconds, a slow link still moves big objects):

* connect: 3 s; a request that sent or received nothing for 20 s fails (read timeout);
* a whole request: 120 s (uploads are split into parts of :data:`PART_SIZE`, downloads into
  ranges of :data:`RANGE_SIZE`, so that is >= 140 KB/s);
* retries: at most 3, backoff 0.1 s doubling to 2 s, none started after 10 s. A refused
  connection fails within about 1 s, an endpoint that drops packets within about 25 s.
"""

from __future__ import annotations

import datetime
import errno
import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, StorageError
from .fsio import object_store_error

#: Size of the parts of a multipart upload; data larger than this is uploaded in parts.
PART_SIZE = 16 * 1024 * 1024
#: Parts of one object uploaded at once.
PART_CONCURRENCY = 8
#: Size of the ranges a large object is downloaded in (in parallel).
RANGE_SIZE = 16 * 1024 * 1024

CLIENT_OPTIONS = {"connect_timeout": "3s", "read_timeout": "20s", "timeout": "120s"}
RETRY_CONFIG = {
    "max_retries": 3,
    "retry_timeout": datetime.timedelta(seconds=10),
    "backoff": {"init_backoff": datetime.timedelta(milliseconds=100),
                "max_backoff": datetime.timedelta(seconds=2), "base": 2},
}
#: The environment variable that allows plain-http endpoints, per scheme (obstore ignores it
#: once client options are given, so it is passed on explicitly).
_ALLOW_HTTP_ENV = {"s3": "AWS_ALLOW_HTTP", "s3a": "AWS_ALLOW_HTTP", "gs": "GOOGLE_ALLOW_HTTP",
                   "az": "AZURE_ALLOW_HTTP", "abfs": "AZURE_ALLOW_HTTP", "abfss": "AZURE_ALLOW_HTTP",
                   "azure": "AZURE_ALLOW_HTTP", "adl": "AZURE_ALLOW_HTTP"}

#: The pid of the process that made the first obstore call (its runtime lives there).
_runtime_pid: int | None = None


def import_obstore():
    """Import obstore, or raise ConfigError saying how to install it."""
    try:
        import obstore
        import obstore.store  # noqa: F401
    except ImportError as exc:
        raise ConfigError("object storage needs the obstore package: pip install 'unbroken[s3]'") from exc
    return obstore


def store_from_url(url: str) -> Any:
    """An obstore store for ``url`` (s3://, gs://, az://..., memory://), configured from the environment."""
    obstore = import_obstore()
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return obstore.store.MemoryStore()
    options = dict(CLIENT_OPTIONS)
    allow = os.environ.get(_ALLOW_HTTP_ENV.get(scheme, ""), "")
    if allow.strip().lower() in ("1", "true", "yes", "on"):
        options["allow_http"] = True
    try:
        return obstore.store.from_url(url, client_options=options, retry_config=RETRY_CONFIG)
    except Exception as exc:  # noqa: BLE001 - obstore raises its own types and ValueError for bad URLs
        raise ConfigError(f"cannot use object storage {url}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc


class ObjectClient:
    """Blocking calls on one store whose keys are relative to ``url``; errors are StorageError."""

    def __init__(self, store: Any, url: str):
        self.obs = import_obstore()
        self.store = store
        self.url = url

    def where(self, key: str = "") -> str:
        """``url/key``, for messages."""
        return f"{self.url}{'' if self.url.endswith('/') else '/'}{key}" if key else self.url

    def call(self, action: str, key: str, fn, *args, **kwargs):
        """Run ``fn(store, *args, **kwargs)``; map its failure to StorageError naming ``key``."""
        _check_not_forked(self.where(key))
        try:
            return fn(self.store, *args, **kwargs)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one translation point of obstore's errors
            raise object_store_error(action, self.where(key), exc) from exc

    def get(self, key: str) -> bytes:
        return bytes(self.call("read", key, lambda s: self.obs.get(s, key).bytes()))

    def get_range(self, key: str, start: int, end: int, etag: str | None = None):
        """Bytes ``[start, end)`` of ``key`` (a buffer); with ``etag``, only of that version (else EEXIST)."""
        options: dict[str, Any] = {"range": (start, end)}
        if etag:
            options["if_match"] = etag
        return self.call("read", key, lambda s: self.obs.get(s, key, options=options).bytes())

    def head(self, key: str) -> dict:
        return self.call("look up", key, self.obs.head, key)

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def put(self, key: str, data, *, create: bool = False) -> None:
        """Upload ``data`` (bytes-like, or a local file's Path) atomically; large data in parallel parts.

        With ``create`` the put is conditional (If-None-Match: *, one request): StorageError
        EEXIST when the object exists.
        """
        if isinstance(data, Path):
            body, size = data, data.stat().st_size
        else:
            body = _byte_view(data)
            size = body.nbytes
        if create:
            self.call("create", key, self.obs.put, key, body, mode="create")
            return
        self.call("upload", key, self.obs.put, key, body, use_multipart=size > PART_SIZE, chunk_size=PART_SIZE,
                  max_concurrency=PART_CONCURRENCY)

    def list(self, prefix: str | None = None) -> Iterator[dict]:
        """Every object under ``prefix`` (recursively): dicts with path, size, last_modified, e_tag."""
        stream = self.call("list", prefix or "", self.obs.list, prefix, chunk_size=1000)
        while True:
            chunk = self.call("list", prefix or "", lambda _s: next(stream, None))
            if chunk is None:
                return
            yield from chunk

    def delete(self, keys: list[str]) -> None:
        """Delete objects in one request where the store allows; missing ones are no error."""
        if not keys:
            return
        try:
            self.call("delete", keys[0], self.obs.delete, keys)
        except StorageError as exc:
            if exc.errno != errno.ENOENT:
                raise
            for key in keys:  # some stores (local files) refuse a batch with a missing key
                try:
                    self.call("delete", key, self.obs.delete, key)
                except StorageError as one:
                    if one.errno != errno.ENOENT:
                        raise


def _byte_view(data) -> memoryview:
    """A flat unsigned-byte view of any contiguous buffer (obstore wants 1-D uint8)."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


def _check_not_forked(where: str) -> None:
    global _runtime_pid
    pid = os.getpid()
    if _runtime_pid is None:
        _runtime_pid = pid
    elif _runtime_pid != pid:
        raise StorageError(errno.EPERM, f"cannot use {where} in a forked child process: the object-store "
                           "client of the parent cannot be used after fork (it would hang); start children "
                           "with multiprocessing 'spawn' or 'forkserver', or open the storage only in the child")
