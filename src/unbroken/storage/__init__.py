"""Where checkpoint bytes live: a small interface, its commit protocols and its backends.

:func:`open_storage` turns a folder or a URL (``s3://bucket/prefix``, ``gs://``, ``az://``,
``memory://``) into a :class:`Storage`. The object-store backend (``ObjectStorage``,
``MarkerCommit``) needs the optional ``obstore`` package (``pip install 'unbroken[s3]'``) and is
imported from :mod:`unbroken.storage.object` only when used.
"""

from .atomicity import CommitProtocol, RenameCommit
from .base import Storage
from .local import LocalStorage
from .url import open_storage

__all__ = ["CommitProtocol", "LocalStorage", "RenameCommit", "Storage", "open_storage"]
