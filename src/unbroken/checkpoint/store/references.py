"""References between incremental checkpoints: who needs whom, and what may be deleted.

A checkpoint with ``refs`` (see :mod:`..format.manifest`) needs the files it refers to, held by
earlier checkpoints. Those checkpoints must stay while any remaining checkpoint refers to them:
retention, ``gc`` and ``rm`` go through :meth:`CheckpointStore.try_delete`, which asks
:func:`referrers`. Pure functions over manifests (no I/O, no locks): the catalog calls them
under its lock with the manifests it knows.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..format.manifest import Manifest


def referrers(uuid: str, manifests: Iterable[Manifest]) -> list[str]:
    """The checkpoints among ``manifests`` that refer to a file of ``uuid`` (sorted)."""
    return sorted(m.uuid for m in manifests if uuid in m.ref_uuids and m.uuid != uuid)


def spare_referenced(doomed: Sequence[Manifest], known: Iterable[Manifest]) -> list[Manifest]:
    """``doomed`` without every checkpoint that a checkpoint staying behind still refers to.

    A checkpoint stays if it is known and not doomed, or doomed but spared; sparing one can
    spare those it refers to in turn, so this iterates to a fixed point. Order is kept.
    """
    doomed_ids = {m.uuid for m in doomed}
    staying = [m for m in known if m.uuid not in doomed_ids]
    needed: set[str] = set()
    frontier = staying
    while frontier:
        new = {u for m in frontier for u in m.ref_uuids} - needed
        needed |= new
        frontier = [m for m in doomed if m.uuid in new]
    return [m for m in doomed if m.uuid not in needed]


def missing_refs(manifest: Manifest, known: set[str]) -> list[str]:
    """The checkpoints ``manifest`` refers to that are not in ``known`` (sorted)."""
    return sorted(manifest.ref_uuids - known)
