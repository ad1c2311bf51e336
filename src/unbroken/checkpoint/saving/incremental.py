"""Incremental saves: which tensors a checkpoint writes, and which it takes from earlier files.

A :class:`Lineage` remembers, for the last committed asynchronous checkpoint, which file holds
each tensor's bytes (its own tensor file, or a file of an earlier checkpoint it refers to). The
next snapshot says which tensors are byte-for-byte unchanged (:mod:`..io.snapshot`); :func:`plan`
keeps those as references to the files that hold them and writes the rest. References are flat:
they always name the checkpoint that holds the bytes, never another reference.

Compaction: a file is referred to only while at least :data:`MIN_LIVE_FRACTION` of it is still
used; below that its tensors are written again, so the files kept alive only by references never
hold more than about ``1 / MIN_LIVE_FRACTION`` times the bytes they serve.

Threads: :func:`plan` and :meth:`Lineage.after` run on the writer thread; the saver hands a lineage
to the next save only after that save's writer finished (one save in flight).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Iterable, Iterator

from ...errors import CheckpointError
from ..format.manifest import FileEntry, FileRef
from ..format.tensorfile import Header
from ..io.snapshot import Snapshot
from ..store.catalog import CheckpointStore

#: Environment variable that turns incremental saves on for every Saver not told otherwise.
ENV_INCREMENTAL = "UNBROKEN_INCREMENTAL"

#: Least share of a referenced file that must still be used for it to be referred to again.
MIN_LIVE_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class Holder:
    """A file that holds tensor bytes: checkpoint uuid, path, size and CRC32C."""

    uuid: str
    path: str
    size: int
    crc32c: str


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Where each tensor of the last committed checkpoint lives; ``layout`` is its tensor-file header."""

    layout: Header
    holders: dict[str, Holder]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one save does: ``write`` (tensor names, in file order) and ``refs`` (the rest)."""

    write: tuple[str, ...]
    refs: tuple[FileRef, ...]
    reused: dict[str, Holder]

    @property
    def incremental(self) -> bool:
        return bool(self.refs)


def full(header: Header) -> Plan:
    """Write every tensor."""
    return Plan(tuple(e.name for e in header.entries), (), {})


def plan(header: Header, unchanged: Iterable[str], lineage: Lineage | None,
         usable: Callable[[str], bool]) -> Plan:
    """Decide what a snapshot with tensor-file ``header`` writes.

    ``unchanged``: tensors whose bytes equal the last committed checkpoint's (the snapshot's
    comparison). ``usable(uuid)``: whether a holder checkpoint still exists and is not known to
    be corrupt (the caller holds its read lease from now until the commit).
    """
    if lineage is None or lineage.layout != header:
        return full(header)
    sizes = {e.name: e.nbytes for e in header.entries}
    candidates = {n: lineage.holders[n] for n in unchanged if n in lineage.holders}
    live: dict[Holder, int] = {}
    for name, holder in candidates.items():
        live[holder] = live.get(holder, 0) + sizes[name]
    keep = {h for h, n in live.items() if n >= MIN_LIVE_FRACTION * h.size and usable(h.uuid)}
    reused = {n: h for n, h in candidates.items() if h in keep}
    refs = tuple(FileRef(h.uuid, h.path, h.size, h.crc32c, tuple(sorted(n for n, x in reused.items() if x == h)))
                 for h in sorted(keep, key=lambda h: (h.uuid, h.path)))
    return Plan(tuple(e.name for e in header.entries if e.name not in reused), refs, reused)


def after(header: Header, decided: Plan, uuid: str, written: FileEntry | None) -> Lineage:
    """The lineage once checkpoint ``uuid`` committed ``decided``, its own tensor file ``written``."""
    holders = dict(decided.reused)
    if decided.write:
        own = Holder(uuid, written.path, written.size, written.crc32c)
        holders.update({name: own for name in decided.write})
    return Lineage(header, holders)


@contextlib.contextmanager
def leased_plan(store: CheckpointStore, snapshot: Snapshot, lineage: Lineage | None) -> Iterator[Plan]:
    """:func:`plan` for ``snapshot`` against ``lineage``, holding a read lease on every checkpoint
    it refers to until the block ends (the caller commits inside it), so that no ``gc`` or ``rm``
    of another process deletes a file between the decision and the commit. A holder that is
    gone, known corrupt, or no longer lists the file is not referred to (its tensors are written).

    Writer thread; blocks only to take the leases and read the holders' manifests.
    """
    with contextlib.ExitStack() as leases:
        corrupt = store.corrupt if lineage is not None else {}
        files = {h.uuid: h for h in (lineage.holders.values() if lineage is not None else ())}

        def usable(uuid: str) -> bool:
            if uuid in corrupt:
                return False
            try:
                manifest = leases.enter_context(store.reading(uuid))
            except CheckpointError:  # gone, or its manifest is unreadable now
                return False
            holder = files[uuid]
            return FileEntry(holder.path, holder.size, holder.crc32c) in manifest.files

        yield plan(snapshot.header, snapshot.unchanged, lineage, usable)


def enabled() -> bool:
    """Whether incremental saves are on by default (``UNBROKEN_INCREMENTAL=1``; off unless set)."""
    return os.environ.get(ENV_INCREMENTAL, "0").lower() in ("1", "true", "yes", "on")
