"""Where checkpoint bytes live: a small interface and its backends."""

from .base import Storage
from .local import LocalStorage

__all__ = ["Storage", "LocalStorage"]
