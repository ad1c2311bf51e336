"""unbroken's own checkpoint methods for the benchmarks ("unbroken sync", "unbroken async").

Both benchmarks call ``register(methods)`` once, after the peers are in the registry. It adds
unbroken's methods when the library is importable (installed, or from this checkout's
``src/``) and offers the checkpoint API below; otherwise it adds nothing and returns the
reason, which the reports print, so a missing method is never silent.

Interface a method must implement (see ``ckpt_methods.CheckpointMethod`` for the full
contract; the harness does all timing, verification and cleanup):

- ``name`` (str) and ``restore_variants`` (tuple of str; each is passed back to ``load``).
- ``setup(workdir)``: one-time preparation, timed separately.
- ``save(state, path)``: ``state`` is a flat ``dict[str, torch.Tensor]`` (CPU, contiguous);
  returns when training may continue and mutate ``state``; the time it blocks is the stall.
- ``wait()``: returns when the last save is fsynced and committed at ``path``.
- ``load(path, like_state, variant)``: fills ``like_state``'s preallocated tensors in place.
- ``close()``.

API of ``unbroken.checkpoint.files`` this adapter uses (the one place to change if the
library settles on other names):

- ``save(state, path, *, blocking: bool)``: write a committed checkpoint directory at
  ``path``; with ``blocking=False`` it returns after the snapshot (every tensor copied into a
  reusable page-aligned host buffer) with a handle whose ``wait()`` returns once the
  checkpoint is committed (and raises what the writer raised). The background writer uses
  direct I/O, one fsync, and the same commit as a run (manifest last, atomic rename).
- ``prepare(state, path)``: the snapshot buffer is faulted in before the first timed save, as
  ``unbroken.init`` does (untimed).
- ``load(path, into)``: verify and restore a checkpoint straight into the tensors of the dict
  ``into`` (in place; a corrupt file leaves them untouched).

Both methods write identical files; the restore row is the same code for both.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ckpt_methods import CheckpointMethod, Registry, State

API_MODULE = "unbroken.checkpoint.files"
EXPECTED_API = ("save", "load")
_SRC = Path(__file__).resolve().parent.parent / "src"


def find_api() -> tuple[object | None, str]:
    """Return (the ``unbroken.checkpoint.files`` module or None, a line explaining the outcome)."""
    if _SRC.is_dir() and str(_SRC) not in sys.path:
        sys.path.append(str(_SRC))  # an installed unbroken, if any, still wins
    try:
        api = importlib.import_module(API_MODULE)
    except Exception as exc:  # a half-edited checkout may raise more than ImportError
        return None, f"not registered: cannot import {API_MODULE} ({exc!r})"
    missing = [name for name in EXPECTED_API if not callable(getattr(api, name, None))]
    if missing:
        return None, f"not registered: {API_MODULE} lacks {', '.join(missing)}"
    return api, f"registered from {getattr(api, '__file__', '?')}"


class UnbrokenMethod(CheckpointMethod):
    """unbroken's checkpoint API, blocking (sync) or with a background writer (async)."""

    restore_variants = ("unbroken load",)

    def __init__(self, api: object, *, blocking: bool) -> None:
        self.api = api
        self.blocking = blocking
        self.name = "unbroken sync" if blocking else "unbroken async"
        self._handle: object | None = None

    def prepare(self, state: State, path: Path) -> None:
        """The asynchronous method gets its snapshot buffer ready, as a run does after its restore
        (``Saver.prepare``: allocated and faulted in off the training thread), and waits for it."""
        if self.blocking:
            return
        self.api.prepare(dict(state), path)  # type: ignore[attr-defined]  # blocks until faulted in

    def save(self, state: State, path: Path) -> None:
        self.wait()
        self._handle = self.api.save(dict(state), path, blocking=self.blocking)  # type: ignore[attr-defined]

    def wait(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None and hasattr(handle, "wait"):
            handle.wait()

    def load(self, path: Path, like_state: State, variant: str) -> None:
        into = dict(like_state)
        self.api.load(path, into=into)  # type: ignore[attr-defined]
        for name, value in into.items():  # tensors not restored in place (CUDA ones): copied, like load_state_dict
            if value is not like_state[name]:
                like_state[name].copy_(value)

    def close(self) -> None:
        self.wait()


def register(methods: Registry) -> str:
    """Add "unbroken sync" and "unbroken async" to ``methods`` if the API exists.

    Returns a line for the reports saying what happened.
    """
    api, status = find_api()
    if api is not None:
        methods["unbroken sync"] = lambda: UnbrokenMethod(api, blocking=True)
        methods["unbroken async"] = lambda: UnbrokenMethod(api, blocking=False)
    return f"unbroken methods {status}"
