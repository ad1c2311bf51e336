"""``store_path(metadata, shard=True)`` on a torch.distributed group: every rank writes files into one checkpoint.

The protocol (all on the training threads, collectives in the same order on every rank):

1. rank 0 stages the checkpoint (:meth:`CheckpointStore.begin`) and broadcasts its uuid and staged
   folder, or its failure (then every rank raises);
2. every rank runs its block, writing its own files under the one folder (file names must not
   collide between ranks: put them in a per-rank subfolder or name them by rank);
3. every rank tells the others how its block ended (an allgather): only if every rank finished
   (and all passed the same ``steps_completed``) does rank 0 commit — checksumming every file and
   writing the manifest last — otherwise it discards the staged folder;
4. rank 0 broadcasts the verdict, so every rank returns only once the checkpoint is committed, or
   raises :class:`~unbroken.errors.CheckpointError` naming the rank that failed.

A checkpoint is thus committed for all ranks or for none. The staged folder must be visible to every
rank (one machine, or a shared POSIX filesystem); object stores are refused with a ConfigError.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from ..checkpoint import CheckpointStore
from ..errors import CheckpointError, ConfigError


@contextlib.contextmanager
def store_together(store: CheckpointStore, group: Any, steps: int, metadata: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, uuid)`` of one staged checkpoint on every rank; commit it when all ranks' blocks end.

    Every rank must enter it at the same point. Blocks for one broadcast on entry, and on exit for
    an allgather, rank 0's commit and a broadcast. Rank 0's ``metadata`` is the checkpoint's.
    Raises ConfigError (object storage, mismatched steps), CheckpointError (another rank failed,
    or the commit did), or re-raises this rank's own error after telling the others.
    """
    if not store.storage.is_local:
        raise ConfigError(f"store_path(shard=True) on several ranks needs local (or shared POSIX) storage; "
                          f"{store.storage.location} is an object store: store from rank 0 only (shard=False)")
    pending = _stage(store, group, steps, metadata)
    uuid, path = group.broadcast((pending.uuid, str(pending.path)) if pending is not None else None)
    if not uuid:
        raise CheckpointError(f"rank 0 could not stage the checkpoint, so rank {group.rank} stores nothing: {path}")
    own_error: BaseException | None = None
    try:
        yield Path(path), uuid
    except BaseException as exc:  # noqa: BLE001 - the others must hear of it; re-raised below
        own_error = exc
    _finish(store, group, pending, steps, own_error)


def _stage(store: CheckpointStore, group: Any, steps: int, metadata: dict[str, Any]):
    """Rank 0's staged checkpoint (None elsewhere); a failure to stage is broadcast, then raised."""
    if not group.is_chief:
        return None
    try:
        return store.begin(steps, metadata)
    except BaseException as exc:
        group.broadcast(("", f"{type(exc).__name__}: {exc}"))
        raise


def _finish(store: CheckpointStore, group: Any, pending: Any, steps: int, own_error: BaseException | None) -> None:
    """Agree on how every rank's block ended; rank 0 commits or discards; all learn the verdict."""
    ended = group.allgather((steps, None if own_error is None else f"{type(own_error).__name__}: {own_error}"))
    verdict = _first_failure(ended)
    if group.is_chief:
        verdict = _commit_or_discard(store, pending, verdict)
        group.broadcast(verdict)
    else:
        verdict = group.broadcast(None)
    if own_error is not None:
        raise own_error
    if verdict is not None:
        raise CheckpointError(f"the checkpoint was not committed: {verdict}")


def _first_failure(ended: list[tuple[int, str | None]]) -> str | None:
    for rank, (_steps, error) in enumerate(ended):
        if error is not None:
            return f"rank {rank} failed in its store_path block: {error}"
    if len({steps for steps, _error in ended}) > 1:
        by_rank = ", ".join(f"rank {r}: {s}" for r, (s, _e) in enumerate(ended))
        return f"the ranks passed different steps_completed ({by_rank}); every rank must store the same step"
    return None


def _commit_or_discard(store: CheckpointStore, pending: Any, verdict: str | None) -> str | None:
    if verdict is not None:
        store.abort(pending)
        return verdict
    try:
        store.commit(pending)
    except BaseException as exc:  # noqa: BLE001 - told to every rank by the caller
        store.abort(pending)
        return f"rank 0 could not commit it: {type(exc).__name__}: {exc}"
    return None
