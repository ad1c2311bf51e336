"""Naming a trainable so that a trial process can import it: ``module:qualname`` or ``/path/file.py:qualname``.

A trial runs in its own process (under ``unbroken run``, maybe on another node), so a Python
trainable travels by reference. A class or function defined in the program's ``__main__``
script is named by the script's path; the trial process imports that file as a module named
``__unbroken_main__`` (so ``if __name__ == "__main__":`` blocks do not run). A script that
calls ``tune.run(...)`` at top level, without such a guard, is imported up to that call: the
call ends the import (:class:`ImportStop`) and the names defined before it are used.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError

MAIN_ALIAS = "__unbroken_main__"
_importing = False


class ImportStop(BaseException):
    """Raised by ``tune.run`` while a trial process imports the program's script (see the module docstring)."""


def importing_for_trial() -> bool:
    """True while a trial process imports the program that defines its trainable."""
    return _importing


def reference_of(obj: Any) -> str:
    """The reference of a module-level class or function; ConfigError for lambdas and nested ones."""
    if isinstance(obj, str):
        return obj
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    if not qualname or not module or "<" in qualname:
        raise ConfigError(f"the trainable {obj!r} must be a class or function defined at the top level of a module "
                          "or script (trials import it in their own processes)")
    if module in ("__main__", MAIN_ALIAS):
        main = sys.modules.get(module)
        path = getattr(main, "__file__", None)
        if path is None:
            raise ConfigError(f"the trainable {qualname} is defined in an interactive session; define it in a file")
        return f"{Path(path).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def load(reference: str) -> Any:
    """Import what ``reference`` names; ConfigError naming it when that fails."""
    where, _, qualname = reference.rpartition(":")
    if not where or not qualname:
        raise ConfigError(f"a trainable reference is 'module:name' or 'path/file.py:name', not {reference!r}")
    try:
        module = import_file(Path(where)) if where.endswith(".py") else importlib.import_module(where)
        obj = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot import the trainable {reference!r}: {type(exc).__name__}: {exc}") from exc
    return obj


def import_file(path: Path):
    if MAIN_ALIAS in sys.modules and getattr(sys.modules[MAIN_ALIAS], "__file__", None) == str(path):
        return sys.modules[MAIN_ALIAS]
    if not path.is_file():
        raise ConfigError(f"the trainable's script {path} does not exist (is the folder shared with the trials?)")
    spec = importlib.util.spec_from_file_location(MAIN_ALIAS, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MAIN_ALIAS] = module
    sys.path.insert(0, str(path.parent))
    with _trial_import():
        try:
            spec.loader.exec_module(module)
        except ImportStop:
            pass
    return module


@contextlib.contextmanager
def _trial_import() -> Iterator[None]:
    global _importing
    _importing = True
    try:
        yield
    finally:
        _importing = False
