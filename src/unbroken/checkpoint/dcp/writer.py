"""``UnbrokenWriter``: torch.distributed.checkpoint's storage writer for one staged unbroken checkpoint.

DCP drives it on every rank of the save (all in the caller's thread, or in DCP's thread for
``async_save``):

1. ``write_data`` (every rank): torch's file writer puts this rank's ``__<rank>_<n>.distcp`` files
   into the staged directory and fsyncs them; then this rank checksums them (CRC32C, read back from
   the page cache) and reports their entries durably (:mod:`unbroken.checkpoint.store.gather`);
2. ``finish`` (DCP's coordinator only, after DCP gathered every rank's write results, so only when
   every rank wrote its files): writes DCP's ``.metadata``, collects the reports and commits the
   unbroken checkpoint: ``MANIFEST.json`` last, atomically. An exception here reaches every rank as
   DCP's ``CheckpointException``; nothing was committed then.

A rank that fails in ``write_data`` makes DCP skip ``finish`` on the coordinator: nothing is
committed; the caller (:func:`unbroken.checkpoint.dcp.save`) discards the staged directory.

The staged directory must be visible to every rank (one machine, or a shared POSIX filesystem),
as for unbroken's own sharded saves. Rank-local metadata (``use_collectives=False``) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.metadata import StorageMeta

from ...errors import CheckpointError, ConfigError
from ..format import checksum
from ..format.manifest import FileEntry, Manifest
from ..store import gather
from ..store.catalog import CheckpointStore
from ..store.pending import PendingCheckpoint

#: How long the coordinator waits for the other ranks' reports in ``finish``: DCP calls it only
#: after every rank returned from ``write_data`` (each reported before returning), so this is slack.
REPORT_TIMEOUT = 120.0


class UnbrokenWriter(FileSystemWriter):
    """Writes one DCP checkpoint into unbroken's staged directory ``path``; commits it in ``finish``.

    ``store`` and ``pending`` are given on the rank that commits (DCP's coordinator, unbroken's
    rank 0) and None on the others. ``uuid`` names the checkpoint on every rank.
    ``manifest`` holds the committed manifest on the coordinator after a successful save.
    """

    def __init__(self, path: Path, uuid: str, *, store: CheckpointStore | None = None,
                 pending: PendingCheckpoint | None = None, thread_count: int = 1):
        super().__init__(Path(path), single_file_per_rank=True, sync_files=True, thread_count=thread_count,
                         overwrite=False)
        self.uuid = uuid
        self.store, self.pending = store, pending
        self.manifest: Manifest | None = None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Refuse rank-local metadata, and a coordinator that did not stage the checkpoint (ConfigError)."""
        super().set_up_storage_writer(is_coordinator, *args, **kwargs)
        if not self.use_collectives:
            raise ConfigError("unbroken's DCP writer needs use_collectives=True: one checkpoint, one .metadata")
        if is_coordinator and self.pending is None:
            raise ConfigError("DCP's coordinator (rank 0 of the save's process group) must be unbroken's rank 0, "
                              "which staged the checkpoint; save with a process group whose rank 0 is global rank 0")

    def storage_meta(self) -> StorageMeta:
        """The checkpoint's uuid, not the staging path (which stops existing at the commit)."""
        return StorageMeta(checkpoint_id=self.uuid, save_id=self.save_id)

    def write_data(self, plan: Any, planner: Any) -> Any:
        """Write this rank's files (fsynced), checksum them and report their entries. Every rank."""
        future = super().write_data(plan, planner)
        results = future.wait()
        names = sorted({result.storage_data.relative_path for result in results})
        entries = {}
        for name in names:
            size, crc = checksum.of_file(self.path / name)
            entries[name] = FileEntry(name, size, crc)
        gather.report(self.path, self.rank or 0, entries)
        return future

    def finish(self, metadata: Any, results: list[list[Any]]) -> None:
        """Coordinator only: write ``.metadata``, then commit the checkpoint for every rank at once."""
        if self.store is None or self.pending is None:
            raise CheckpointError("DCP called finish on a rank that did not stage the checkpoint")
        super().finish(metadata, results)
        entries, _pickle = gather.collect(self.path, len(results), timeout=REPORT_TIMEOUT)
        self.pending.add_written(entries)
        self.manifest = self.store.commit(self.pending)
