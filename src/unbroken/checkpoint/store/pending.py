"""A checkpoint being written: what a save hands to :meth:`CheckpointStore.commit`.

The request (``steps_completed`` and metadata) is validated once, when the pending checkpoint
is created, before any byte is written; files written by unbroken's own writers arrive with
their entry (size and CRC32C computed while writing) and are already durable, so the commit
neither reads nor fsyncs them again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...tracking.values import check_steps  # the index stores it as a signed 64-bit integer
from ..format.manifest import FileEntry

__all__ = ["PendingCheckpoint", "check_metadata", "check_steps"]

@dataclasses.dataclass
class PendingCheckpoint:
    """Files go into ``path``; nothing is visible until the store commits it.

    ``entries`` holds files whose writer already checksummed and fsynced them; any other
    file found in ``path`` at commit time is checksummed and fsynced by the commit.
    """

    uuid: str
    path: Path
    steps_completed: int
    metadata: dict[str, Any]
    entries: dict[str, FileEntry] = dataclasses.field(default_factory=dict)
    needs_pickle: bool = False

    def add_written(self, entries: dict[str, FileEntry], needs_pickle: bool = False) -> None:
        """Record files a writer made durable (with their checksums)."""
        self.entries.update(entries)
        self.needs_pickle = self.needs_pickle or needs_pickle


def check_metadata(metadata: Any) -> dict[str, Any]:
    """Return a JSON copy of ``metadata`` (a dict; None is {}), else raise ConfigError."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"checkpoint metadata must be a dict, not {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"checkpoint metadata must be JSON (no NaN, no objects): {exc}") from None
