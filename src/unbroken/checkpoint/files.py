"""Checkpoint directories by path, without a run: ``save(state, path)`` and ``load(path, into)``.

For scripts, tools and benchmarks that want unbroken's format and fast path (snapshot plus
background writer, in-place verified restore) with a directory of their choosing::

    from unbroken.checkpoint.files import save, load

    handle = save({"w": w, "b": b}, "ckpts/step-100", blocking=False)  # returns after a snapshot
    ...                                                                # training goes on
    handle.wait()                                                      # committed
    prepare(state, "ckpts/step-200")   # optional: fault the snapshot buffer in before the first async save
    load("ckpts/step-100", into={"w": w, "b": b})                       # fills w and b in place

``path`` becomes a committed checkpoint (manifest written last, atomic rename) of the store
rooted at its parent folder. ``state`` is a :class:`State` or a flat mapping of names to
tensors and arrays (each name becomes a State entry, so the tensor file keeps the names).
Snapshot buffers and the background writer are shared per parent folder, so repeated saves
reuse one host buffer (:func:`release` frees it); at most one save per parent folder is in
flight. Not for concurrent use from several threads.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping, MutableMapping

from ..storage import LocalStorage
from .saving import statefile
from .format.manifest import Manifest
from .saving.saver import Saver
from .saving.state import State
from .store.catalog import CheckpointStore
from .io.writer import SaveHandle

_savers: dict[Path, Saver] = {}
_lock = threading.Lock()


def save(state: State | Mapping[str, Any], path: str | os.PathLike[str], *, blocking: bool = True,
         steps_completed: int = 0, metadata: dict[str, Any] | None = None) -> SaveHandle:
    """Save ``state`` as the checkpoint directory ``path`` (which must not exist yet).

    ``blocking=False`` returns right after the snapshot; ``handle.wait()`` returns the
    manifest once committed (or raises BackgroundSaveError).
    """
    path = Path(path).absolute()
    saver = _saver_for(path.parent)
    return saver.save(_as_state(state), steps_completed, metadata, wait=blocking, uuid=path.name)


def prepare(state: State | Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Allocate and fault in the snapshot buffer that non-blocking saves of ``state`` into ``path``'s
    parent folder use, now (blocks until it is ready), so the first ``save(blocking=False)`` stalls
    no longer than the later ones."""
    _saver_for(Path(path).absolute().parent).prepare(_as_state(state), wait=True)


def wait(path: str | os.PathLike[str] | None = None) -> None:
    """Wait for the background saves (into ``path``'s parent folder, or all)."""
    with _lock:
        savers = list(_savers.values()) if path is None else [_savers.get(Path(path).absolute().parent)]
    for saver in savers:
        if saver is not None:
            saver.wait()


def release(path: str | os.PathLike[str] | None = None) -> None:
    """Wait for the background saves, then free the snapshot buffers (of ``path``'s parent folder, or all)."""
    with _lock:
        roots = list(_savers) if path is None else [Path(path).absolute().parent]
        savers = [_savers.pop(root) for root in roots if root in _savers]
    for saver in savers:
        saver.release_buffer()


def load(path: str | os.PathLike[str], into: State | MutableMapping[str, Any], *, strict: bool = True,
         allow_pickle: bool = False) -> Manifest:
    """Verify the checkpoint at ``path`` and load it into ``into``, in place where tensors fit.

    A mapping gets every entry of the checkpoint (its tensors filled in place, other values
    replaced). Raises CorruptCheckpoint, leaving ``into`` untouched, if any byte is wrong.
    """
    path = Path(path).absolute()
    store = CheckpointStore(LocalStorage(path.parent))
    manifest = store.manifest(path.name)
    if isinstance(into, State):
        statefile.restore(into, path, manifest, allow_pickle=allow_pickle, strict=strict)
        return manifest
    state = _as_state(into)
    statefile.restore(state, path, manifest, allow_pickle=allow_pickle, strict=strict)
    for name in state:
        into[name] = state[name]
    return manifest


def _as_state(state: State | Mapping[str, Any]) -> State:
    if isinstance(state, State):
        return state
    return State(rng=False, **dict(state))


def _saver_for(root: Path) -> Saver:
    with _lock:
        saver = _savers.get(root)
        if saver is None:
            saver = _savers[root] = Saver(CheckpointStore(LocalStorage(root)))
        return saver


__all__ = ["load", "prepare", "release", "save", "wait"]
