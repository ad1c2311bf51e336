"""Several writers, one commit: each rank reports the files it put into a shared staged checkpoint.

A sharded save has one staged directory (created by rank 0, named to every rank by a broadcast).
Each rank writes its own files into it and then :func:`report`\\ s their manifest entries (or its
failure) as a small durable file ``.shards/rank-<r>.json`` inside it. Rank 0 :func:`collect`\\ s
the reports of all ranks, removes them and commits the checkpoint with every entry: the manifest
is written only once every rank is done, so the checkpoint is committed for all ranks or for none.

The exchange goes through the (shared) filesystem, not through torch.distributed, so the writer
threads never call a collective: collectives stay on the training threads (see
:mod:`unbroken.checkpoint.saving.sharded`). It needs the staged directory to be visible to every
rank (one machine, or a shared POSIX filesystem).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from ...errors import CheckpointError
from ...storage.fsio import storage_error, write_durably
from ..format.manifest import FileEntry

REPORTS_DIR = ".shards"
#: How long rank 0 waits for the other ranks' reports (a dead rank is its launcher's to notice first).
COLLECT_TIMEOUT = 1800.0


def report(staged: Path, rank: int, entries: dict[str, FileEntry] | None, needs_pickle: bool = False,
           error: str | None = None) -> None:
    """Record durably that ``rank`` finished writing its files (``entries``) or failed (``error``).

    Any rank, any thread; blocks for one small fsynced write. Raises StorageError.
    """
    body = {"rank": rank, "needs_pickle": needs_pickle, "error": error,
            "entries": [[e.path, e.size, e.crc32c] for e in (entries or {}).values()]}
    path = Path(staged) / REPORTS_DIR / f"rank-{rank}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path.with_suffix(".part"), json.dumps(body).encode())
        path.with_suffix(".part").rename(path)
    except OSError as exc:
        raise storage_error("report the shard of rank", path, exc) from exc


def collect(staged: Path, size: int, *, timeout: float = COLLECT_TIMEOUT, poll: float = 0.005,
            clock: Callable[[], float] = time.monotonic) -> tuple[dict[str, FileEntry], bool]:
    """Wait for the reports of ranks ``0..size-1``; return every entry and whether any used pickle.

    Rank 0 only, in the thread that commits. Removes the reports. Raises CheckpointError naming
    the rank when one reported a failure or ``timeout`` seconds passed without all reports.
    """
    folder = Path(staged) / REPORTS_DIR
    deadline = clock() + timeout
    missing = set(range(size))
    reports = {}
    while missing:
        for rank in sorted(missing):
            body = _read(folder / f"rank-{rank}.json")
            if body is not None:
                reports[rank] = body
                missing.discard(rank)
        failed = {r: b["error"] for r, b in reports.items() if b.get("error")}
        if failed:
            rank, error = min(failed.items())
            raise CheckpointError(f"rank {rank} could not write its shard: {error}; nothing was committed")
        if missing and clock() > deadline:
            raise CheckpointError(f"rank(s) {sorted(missing)} did not finish writing their shards within "
                                  f"{timeout:g} s; nothing was committed")
        if missing:
            time.sleep(poll)
    shutil.rmtree(folder, ignore_errors=True)
    entries = {path: FileEntry(path, size_, crc) for b in reports.values() for path, size_, crc in b["entries"]}
    return entries, any(b["needs_pickle"] for b in reports.values())


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable shard report {path}: {exc}") from None
