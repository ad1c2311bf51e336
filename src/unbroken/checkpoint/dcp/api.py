"""Saving and loading torch.distributed.checkpoint (DCP) state dicts as unbroken checkpoints.

Every function here is a collective over the run's ranks (``run.distributed``) and over DCP's
process group: every rank calls it at the same point, from its training thread. DCP's coordinator
(rank 0 of ``process_group``, default: the default group) must be unbroken's rank 0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import warnings
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from ...errors import CheckpointError, CheckpointGone, ConfigError, CorruptCheckpoint, UnbrokenError
from ..store.pending import PendingCheckpoint, check_metadata, check_steps
from .reader import METADATA_NAME, UnbrokenReader
from .writer import UnbrokenWriter


def save(state_dict: dict[str, Any], run: Any, steps_completed: int, metadata: dict[str, Any] | None = None, *,
         process_group: Any = None, planner: Any = None, thread_count: int = 1) -> str:
    """Save ``state_dict`` with ``dcp.save`` into a new checkpoint of ``run``; return its uuid on every rank.

    Blocks until the checkpoint is committed (manifest written last, by rank 0, after every rank's
    files are durable and checksummed): committed for all ranks or for none. Then rank 0 records it
    in the index and applies retention. Raises ConfigError for a bad request (before anything is
    written) and CheckpointError (on every rank) when any rank failed; the staged files are
    discarded then and earlier checkpoints are untouched.
    """
    pending, writer = _stage(run, steps_completed, metadata, process_group, thread_count)
    try:
        with _quiet(run):
            dcp.save(state_dict, storage_writer=writer, process_group=process_group, planner=planner,
                     no_dist=_no_dist(run))
    except BaseException as exc:
        _abort(run, pending, writer)
        _reraise(exc, f"checkpoint {writer.uuid} was not committed")
    return writer.uuid


def async_save(state_dict: dict[str, Any], run: Any, steps_completed: int, metadata: dict[str, Any] | None = None,
               *, process_group: Any = None, planner: Any = None, thread_count: int = 1) -> concurrent.futures.Future:
    """:func:`save` with ``dcp.async_save``: returns once the state dict is copied to CPU memory.

    The returned future gives the uuid once the checkpoint is committed (or raises CheckpointError on
    every rank). DCP writes and commits in its own thread and runs its collectives there on
    ``process_group``: pass a group used for nothing else (``dist.new_group(backend="gloo")``) so they
    never interleave with the training thread's collectives. Do not start the next save before the
    future is done.
    """
    pending, writer = _stage(run, steps_completed, metadata, process_group, thread_count)
    try:
        with _quiet(run):
            inner = dcp.async_save(state_dict, storage_writer=writer, process_group=process_group, planner=planner,
                                   no_dist=_no_dist(run))
    except BaseException as exc:
        _abort(run, pending, writer)
        _reraise(exc, f"checkpoint {writer.uuid} was not committed")
    inner = getattr(inner, "upload_completion", inner)
    outer: concurrent.futures.Future = concurrent.futures.Future()

    def settle(done: Any) -> None:
        error = done.exception()
        if error is None:
            outer.set_result(writer.uuid)
            return
        _abort(run, pending, writer)
        outer.set_exception(_translated(error, f"checkpoint {writer.uuid} was not committed"))

    inner.add_done_callback(settle)
    return outer


def load(state_dict: dict[str, Any], run: Any, checkpoint: str | None = None, *, allow_pickle: bool = False,
         process_group: Any = None, planner: Any = None) -> str | None:
    """Load a DCP checkpoint of ``run`` into ``state_dict`` in place (``dcp.load``); return its uuid.

    ``checkpoint`` None: the newest DCP checkpoint that every rank can read (its files verify), or
    None (state dict untouched) when there is none; one that fails is reported corrupt and skipped,
    as ``latest_checkpoint`` does. A named checkpoint that fails raises CorruptCheckpoint (or
    CheckpointError, PickleNotAllowed, UnsafePathError) on every rank. Each rank verifies the files
    it reads before any rank loads a byte. DCP reshards on load, so the world size may differ from
    the save's. The checkpoint is leased (no retention or gc deletes it) while it is read.
    """
    if checkpoint is not None:
        _load_one(state_dict, run, checkpoint, allow_pickle, process_group, planner)
        return checkpoint
    group = run.distributed
    uuids = group.broadcast([m.uuid for m in run.checkpoint.candidates() if _is_dcp(m)] if group.is_chief else None)
    for uuid in uuids:
        try:
            _load_one(state_dict, run, uuid, allow_pickle, process_group, planner)
            return uuid
        except CheckpointGone:
            continue
        except CorruptCheckpoint as exc:
            if group.is_chief:
                run.checkpoint.report_corrupt(uuid, str(exc))
            else:
                run.checkpoint.store.mark_corrupt(uuid, str(exc))
    return None


def should_stop(run: Any) -> bool:
    """True on every rank once any rank was asked to stop (signal, deadline): save now, then leave the run.

    Training loops that save with this module (not with ``run.steps`` and a State) call it at each
    step boundary, on every rank: one allgather in a group run (a collective), none for one process.
    Once it answered True, ``run.preempted`` is True on every rank, and leaving the ``with`` block
    exits with 75 so that ``unbroken run`` restarts the job from the newest checkpoint.
    """
    return run.preempt.agree()


def _load_one(state_dict: dict[str, Any], run: Any, uuid: str, allow_pickle: bool, process_group: Any,
              planner: Any) -> None:
    """Lease, agree that every rank could open ``uuid``, then ``dcp.load`` it. Raises on every rank alike."""
    store, group = run.checkpoint.store, run.distributed
    with contextlib.ExitStack() as stack:
        reader, problem = None, None
        try:
            manifest = stack.enter_context(store.reading(uuid))
            reader = UnbrokenReader(store.local_copy(uuid), manifest, allow_pickle=allow_pickle)
        except Exception as exc:  # noqa: BLE001 - told to every rank below, then raised on each
            problem = exc
        problems = group.allgather(None if problem is None else (type(problem).__name__, str(problem)))
        failed = [(rank, p) for rank, p in enumerate(problems) if p is not None]
        if failed:
            raise _rebuilt(failed[0][1], failed[0][0], f"checkpoint {uuid} cannot be loaded") from None
        try:
            with _quiet(run):
                dcp.load(state_dict, storage_reader=reader, process_group=process_group, planner=planner,
                         no_dist=_no_dist(run))
        except BaseException as exc:
            _reraise(exc, f"checkpoint {uuid} cannot be loaded")
        if group.is_chief:
            run.checkpoint.record_restore(manifest)


def _stage(run: Any, steps: int, metadata: dict | None, process_group: Any,
           thread_count: int) -> tuple[PendingCheckpoint | None, UnbrokenWriter]:
    """Rank 0 stages the checkpoint; every rank learns where (a broadcast); each gets its writer."""
    store, group = run.checkpoint.store, run.distributed
    steps, metadata = check_steps(steps), check_metadata(metadata)
    _check_group(run, process_group)
    pending, plan = None, None
    if group.is_chief:
        try:
            pending = store.begin(steps, metadata)
            plan = (pending.uuid, str(pending.path))
        except BaseException as exc:  # noqa: BLE001 - the others must hear of it, then it is raised
            group.broadcast(("", f"{type(exc).__name__}: {exc}"))
            raise
    plan = group.broadcast(plan)
    if not plan[0]:
        raise CheckpointError(f"rank 0 could not stage the checkpoint: {plan[1]}")
    writer = UnbrokenWriter(Path(plan[1]), plan[0], store=store if pending else None, pending=pending,
                            thread_count=thread_count)
    return pending, writer


def _check_group(run: Any, process_group: Any) -> None:
    group = run.distributed
    if group.size > 1 and not run.checkpoint.store.storage.is_local:
        raise ConfigError("DCP checkpoints of several ranks need local (or shared POSIX) storage; "
                          f"{run.checkpoint.store.storage.location} is an object store")
    if _no_dist(run):
        return
    if dist.get_world_size(process_group) != group.size or (dist.get_rank(process_group) == 0) != group.is_chief:
        raise ConfigError("DCP's process group must hold every rank of the run, with unbroken's rank 0 as its "
                          "rank 0 (it commits); pass process_group=None or such a group")


def _abort(run: Any, pending: PendingCheckpoint | None, writer: UnbrokenWriter) -> None:
    if pending is not None and writer.manifest is None:
        run.checkpoint.store.abort(pending)


def _no_dist(run: Any) -> bool:
    return run.distributed.size == 1 and not (dist.is_available() and dist.is_initialized())


@contextlib.contextmanager
def _quiet(run: Any) -> Any:
    """Silence DCP's "assuming the intent is to ... in a single process" warning: it is the intent here."""
    with warnings.catch_warnings():
        if _no_dist(run):
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _is_dcp(manifest: Any) -> bool:
    return any(entry.path == METADATA_NAME for entry in manifest.files)


def _reraise(exc: BaseException, what: str) -> None:
    """Raise ``exc``, or the unbroken error it stands for (DCP's CheckpointException, chained for its tracebacks)."""
    translated = _translated(exc, what)
    if translated is exc:
        raise exc
    raise translated from exc


def _translated(exc: BaseException, what: str) -> BaseException:
    """DCP's CheckpointException (any rank's failure, on every rank) as an unbroken error naming the rank.

    The first failure that is an unbroken error keeps its type (CorruptCheckpoint, PickleNotAllowed, ...);
    anything else becomes a CheckpointError. Other exceptions are returned unchanged.
    """
    if not isinstance(exc, CheckpointException):
        return exc
    failures = sorted((rank, pair[0]) for rank, pair in exc.failures.items())
    ours = [(rank, err) for rank, err in failures if isinstance(err, UnbrokenError)]
    rank, first = (ours or failures)[0]
    return _rebuilt((type(first).__name__, str(first)), rank, what)


def _rebuilt(problem: tuple[str, str], rank: int, what: str = "") -> BaseException:
    """An error of the unbroken type named in ``problem`` (type name, message), naming the rank."""
    name, message = problem
    kind = next((k for k in _KINDS if k.__name__ == name), None)
    text = f"{what + ': ' if what else ''}rank {rank}: " + (message if kind else f"{name}: {message}")
    try:
        return (kind or CheckpointError)(text)
    except TypeError:
        return CheckpointError(text)


def _kinds() -> list[type]:
    from ... import errors  # noqa: PLC0415

    return [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, UnbrokenError)]


_KINDS = _kinds()
