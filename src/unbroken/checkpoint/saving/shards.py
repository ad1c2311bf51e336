"""The layout of a sharded checkpoint: which part of a State each rank writes and reads.

A checkpoint of a group of ``size`` ranks holds, beside its manifest::

    rank-<r>/state.json, rank-<r>/tensors.safetensors   every entry not marked replicated, and the
                                                        global RNGs of rank r (one folder per rank)
    replicated/state.json, replicated/tensors.safetensors
                                                        the entries of ``State(replicated=...)``,
                                                        written by rank 0 only, read by every rank

Each part is an ordinary State file (:mod:`.statefile`) in its folder. A checkpoint written by a
single process (``state.json`` at the top) is read whole by every rank.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..format.manifest import FileEntry, Manifest
from . import statefile
from .state import State

REPLICATED = "replicated"


def rank_folder(rank: int) -> str:
    return f"rank-{rank}"


def parts_to_write(state: State, rank: int) -> list[tuple[str, State]]:
    """``(folder, sub-State)`` that ``rank`` writes: its own part, and on rank 0 the replicated one."""
    own = State(rng=state.rng, allow_pickle=state.allow_pickle,
                **{name: state[name] for name in state if name not in state.replicated})
    parts = [(rank_folder(rank), own)]
    if rank == 0 and state.replicated:
        parts.append((REPLICATED, _replicated(state)))
    return parts


def parts_to_read(state: State, rank: int, manifest: Manifest) -> list[tuple[str, State]]:
    """``(folder, sub-State)`` that ``rank`` restores from ``manifest`` ("" is the whole checkpoint)."""
    paths = {f.path for f in manifest.files}
    if f"{rank_folder(rank)}/{statefile.STATE_JSON}" not in paths:
        return [("", state)]  # written by one process (or a rank this checkpoint lacks: its error names it)
    parts = parts_to_write(state, rank)[:1]
    if state.replicated:
        parts.append((REPLICATED, _replicated(state)))
    return parts


def _replicated(state: State) -> State:
    return State(rng=False, allow_pickle=state.allow_pickle,
                 **{name: state[name] for name in state if name in state.replicated})


def entries_in(manifest: Manifest, folder: str) -> list[FileEntry]:
    """The manifest entries of ``folder`` (every entry for "")."""
    if not folder:
        return list(manifest.files)
    return [f for f in manifest.files if f.path.startswith(folder + "/")]


def sub_manifest(manifest: Manifest, folder: str) -> Manifest:
    """``manifest`` as seen from ``folder``: its entries there, with paths relative to it."""
    if not folder:
        return manifest
    files = tuple(dataclasses.replace(f, path=f.path[len(folder) + 1:]) for f in entries_in(manifest, folder))
    return dataclasses.replace(manifest, files=files, refs=())


def prefixed(entries: dict[str, FileEntry], folder: str) -> dict[str, FileEntry]:
    """Entries written into ``folder``, with their paths relative to the checkpoint."""
    return {f"{folder}/{rel}": dataclasses.replace(e, path=f"{folder}/{rel}") for rel, e in entries.items()}


def restore_part(state: State, part: State, directory: Path, manifest: Manifest, folder: str, *,
                 allow_pickle: bool, strict: bool) -> None:
    """Read one part (verified as it is read) into ``part``, then put its plain values back into ``state``."""
    statefile.restore(part, directory / folder if folder else directory, sub_manifest(manifest, folder),
                      allow_pickle=allow_pickle, strict=strict)
    if part is not state:
        for name in part:
            state[name] = part[name]
