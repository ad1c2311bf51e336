"""Modules imported at their first use, so that ``import unbroken`` stays light.

The index's storage engine (SQLAlchemy) costs about 0.1 s to import; training code that never
opens a tracker should not pay it. :func:`lazy_module` returns a module object whose code runs at
its first attribute access (the standard library's ``importlib.util.LazyLoader``).
:func:`load` executes them at once: the tracker calls it when it opens, in the opening thread and
under a lock, so that threads never race on a half-executed module (LazyLoader is not
thread-safe before Python 3.12).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types

_LOCK = threading.Lock()


def lazy_module(name: str) -> types.ModuleType:
    """The module ``name``: the imported one if it is, else one that executes at first use."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def load(*modules: types.ModuleType) -> None:
    """Execute lazy ``modules`` now (touching an attribute does it), one thread at a time."""
    with _LOCK:
        for module in modules:
            getattr(module, "__name__")
            getattr(module, "__dict__")
