"""The dashboard's mutating actions on checkpoints: verify and export.

Both are the code of the CLI: ``verify`` is :func:`unbroken.cli._verify.check_all` (what
``unbroken verify TRIAL --uuid U`` runs: re-checksum, and record damage in the index), ``export``
is the directory copy of ``unbroken export TRIAL --uuid U --to DIR``, verifying every byte it
copies. The export goes to a folder the server chooses, ``<home>/exports/<experiment>/trial-<n>/<uuid>``
(a URL never names a path); exporting the same checkpoint twice answers with the existing copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint.format import manifest as manifest_mod
from ..cli._checks import entries, read_manifest
from ..cli._resolve import trial_target
from ..cli._verify import _export_dir, check_all
from ..errors import ConfigError, CorruptCheckpoint
from ..tracking import Tracker, Trial


def verify(home: Path, tracker: Tracker, trial: Trial, uuid: str) -> dict[str, Any]:
    """Re-checksum checkpoint ``uuid`` of ``trial`` (writable ``tracker``: damage is recorded).

    Returns the row of ``verify --json``: ``{"uuid", "steps_completed", "size_bytes", "status":
    "ok"|"corrupt"|"gone", "reason"}``; CheckpointNotFound when the trial has no such checkpoint.
    """
    target = trial_target(home, tracker, trial)
    (entry,) = entries(target, uuid)
    outcome = check_all(target, [entry])[uuid]
    return {"uuid": uuid, "steps_completed": entry.manifest.steps_completed if entry.manifest else None,
            "size_bytes": entry.size, "status": outcome.status, "reason": outcome.reason}


def export_folder(home: Path, trial: Trial, uuid: str) -> Path:
    """Where :func:`export` puts checkpoint ``uuid`` of ``trial``."""
    return home / "exports" / trial.experiment / f"trial-{trial.number}" / uuid


def export(home: Path, tracker: Tracker, trial: Trial, uuid: str) -> dict[str, Any]:
    """Copy checkpoint ``uuid`` out, verified, into :func:`export_folder`.

    Returns ``{"uuid", "steps_completed", "to", "files", "size_bytes", "existed"}``; a corrupt
    checkpoint raises CorruptCheckpoint (nothing is left behind), one gone raises CheckpointGone.
    """
    target = trial_target(home, tracker, trial)
    (entry,) = entries(target, uuid)
    if entry.manifest is None:
        raise CorruptCheckpoint(entry.problem or f"checkpoint {uuid} has no valid manifest")
    dest = export_folder(home, trial, uuid)
    existed = (dest / "MANIFEST.json").is_file()
    if dest.exists() and not existed:
        raise ConfigError(f"{dest} exists and holds no exported checkpoint: remove it and export again")
    if not existed:
        _export_dir(entry, dest)
    exported = manifest_mod.parse(read_manifest(dest))  # an incremental checkpoint is exported complete
    return {"uuid": uuid, "steps_completed": exported.steps_completed, "to": str(dest),
            "files": [f.path for f in exported.files] + ["MANIFEST.json"], "size_bytes": exported.size,
            "existed": existed}
