"""The first save after a restore is incremental too: the restored checkpoint seeds the lineage.

Without a seed, the first save of a process writes every tensor (the process has no previous
snapshot to compare with), so a job that is killed and resumed often writes its frozen layers
again after every restart. After a restore, :func:`seeder` reads the restored checkpoint's
files again -- now from the page cache -- into the snapshot buffer the first save will use,
verified like any restore (its own tensor file and the earlier files it refers to), and gives
the saver a :class:`~.incremental.Lineage` naming the file that holds each tensor. The first
save then compares the live tensors with those bytes and refers to the files for the ones that
did not change since the restore.

The bytes compared with are read from the holder files themselves, never copied from the live
tensors (training may already be changing them while the seed runs), so "unchanged" always
means "equal to the bytes of the file it will refer to". A seed that fails (a file deleted or
damaged since the restore, a storage error) only makes the first save complete.

Threads: the seed runs on the snapshotter's reserve thread; the saver adopts its lineage at the
next save, after waiting for that thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from ..format import arrays
from ..format.manifest import Manifest
from ..format.tensorfile import Header
from ..io import reader
from ..io.hostmem import HostBuffer
from ..store.catalog import CheckpointStore
from . import statefile
from .incremental import Holder, Lineage

log = logging.getLogger("unbroken")


def holders_of(manifest: Manifest, names: set[str]) -> dict[str, Holder]:
    """Which file of checkpoint ``manifest`` holds each tensor of ``names``: a file it refers to for
    the tensors taken from it, its own tensor file for the others."""
    taken = {name: Holder(r.uuid, r.path, r.size, r.crc32c) for r in manifest.refs for name in r.tensors}
    own = {f.path: f for f in manifest.files}.get(statefile.TENSORS_FILE)
    mine = Holder(manifest.uuid, own.path, own.size, own.crc32c) if own is not None else None
    holders = {name: taken.get(name, mine) for name in names}
    return {name: holder for name, holder in holders.items() if holder is not None}


def seeder(store: CheckpointStore, manifest: Manifest, tensors: dict[str, Any],
           adopt: Callable[[Lineage], None]) -> Callable[[HostBuffer, Header], bool]:
    """A seed for :meth:`~..io.snapshot.Snapshotter.reserve` from the restored checkpoint ``manifest``
    of a local store; ``tensors``: the State's, as captured (their kinds decide the views read into).

    The seed holds a read lease on the checkpoint while it reads, and calls ``adopt(lineage)``
    with the tensors it filled, if every file verified.
    """
    kinds = {key: "numpy" if isinstance(value, np.ndarray) else "torch" for key, value in tensors.items()}
    own = {f.path: f for f in manifest.files}.get(statefile.TENSORS_FILE)

    def seed(image: HostBuffer, header: Header) -> bool:
        start = header.data_start
        try:
            targets = {e.name: arrays.from_bytes(image.region(start + e.begin, start + e.end), e.dtype, e.shape,
                                                 kinds[e.name]) for e in header.entries if e.nbytes}
            with store.reading(manifest.uuid):
                directory = store.local_copy(manifest.uuid)
                loaded = reader.read_tensors(directory, manifest.uuid, own, targets,
                                             refs=statefile.ref_sources(directory, manifest, store.local_copy))
        except Exception as exc:  # noqa: BLE001 - only an optimisation: the first save is then complete
            log.debug("unbroken: the first save after restoring %s will be complete: %s", manifest.uuid, exc)
            return False
        adopt(Lineage(header, holders_of(manifest, loaded.in_place)))
        return True

    return seed
