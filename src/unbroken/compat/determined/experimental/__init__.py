"""``determined.experimental``: ``from unbroken.compat.determined.experimental import core_v2``."""

from .. import core_v2

__all__ = ["core_v2"]
