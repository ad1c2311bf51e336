"""UnbrokenCheckpointIO: Lightning's checkpoint dict saved as, and loaded from, unbroken checkpoints.

Format: one State entry holding the dict (tensors in safetensors, the rest JSON; see
:mod:`unbroken.checkpoint.saving.statefile`) plus torch's per-module state_dict versions.
Main thread; Lightning saves on global rank 0 only and loads on every rank.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from ...checkpoint import Manifest, State
from ...checkpoint.saving import statefile
from ...checkpoint.saving.saver import Saver
from ...errors import CheckpointNotFound, ConfigError, CorruptCheckpoint, UnsupportedValue
from ...runtime.run import Run

log = logging.getLogger("unbroken")

#: The State entries holding Lightning's checkpoint dict and torch's state_dict versions.
ENTRY, VERSIONS = "lightning", "state_dict_versions"
#: ``metadata["format"]`` of the checkpoints this plugin writes.
FORMAT = "lightning-checkpoint"


class UnbrokenCheckpointIO(CheckpointIO):
    """Lightning's checkpoint dict <-> unbroken checkpoints of ``run`` (see the module docstring).

    ``save_checkpoint`` blocks until the checkpoint is committed (and retention applied).
    Values that are not tensors, numbers, strings, lists or dicts (e.g. an ``nn.Module`` in
    ``hyper_parameters``) are refused unless ``allow_pickle=True``, which then is needed to load.
    """

    def __init__(self, run: Run, *, allow_pickle: bool = False):
        super().__init__()
        self.run = run
        self.allow_pickle = allow_pickle
        self._stop_saved_at: int | None = None
        #: ``global_step`` of the newest checkpoint this process committed (None before the first).
        self.last_saved_step: int | None = None
        self._saver: Saver | None = None  # this rank's own: Lightning calls it on global rank 0 only

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        """Commit ``checkpoint`` as one unbroken checkpoint labelled ``path``; nothing is written at ``path``.

        After a stop request, a second save at the same ``global_step`` is skipped: it holds the
        same weights, and an epoch-end save after a mid-epoch stop would misstate the progress.
        """
        if storage_options is not None:
            raise ConfigError("UnbrokenCheckpointIO takes no storage_options: the storage is unbroken's "
                              "(init(storage=...))")
        steps = int(checkpoint.get("global_step", 0))
        if self.run.preempt.should_preempt():
            if self._stop_saved_at == steps:
                log.info("unbroken: stopping: step %d is already saved; not saving %s again", steps, path)
                return
            self._stop_saved_at = steps
        versions = getattr(checkpoint.get("state_dict"), "_metadata", None)  # torch's per-module state_dict versions
        state = State(rng=False, allow_pickle=self.allow_pickle, **{ENTRY: checkpoint, VERSIONS: versions})
        metadata = {"format": FORMAT, "lightning_path": os.fspath(path), "epoch": int(checkpoint.get("epoch", 0))}
        if self._saver is None:
            self._saver = Saver(self.run.checkpoint.store, incremental=False)
        try:
            handle = self._saver.save(state, steps, metadata, wait=True)  # commit: indexed, then retention
        except UnsupportedValue as exc:
            raise UnsupportedValue(f"{exc} (for a Lightning checkpoint: UnbrokenCheckpointIO(run, allow_pickle=True))"
                                   ) from None
        handle.wait()  # raises BackgroundSaveError if the commit failed
        self.last_saved_step = steps
        self.run.train.report_metrics("checkpoint", steps, {"save_s": handle.save_s, "bytes": handle.nbytes})

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Verify and load a checkpoint: ``path`` is a uuid, its folder, or a path Lightning saved to.

        Raises CheckpointNotFound (no such checkpoint), CorruptCheckpoint (it failed
        verification; it is marked corrupt and warned about), PickleNotAllowed (it holds
        pickled values and ``allow_pickle`` is False). ``weights_only`` is ignored: nothing is
        unpickled unless ``allow_pickle``.
        """
        if map_location is not None and not isinstance(map_location, (str, torch.device)):
            raise ConfigError(f"UnbrokenCheckpointIO: map_location must be a device or its name, not {map_location!r}")
        manifest = self._find(path)
        if manifest.metadata.get("format") != FORMAT:
            raise ConfigError(f"checkpoint {manifest.uuid} was not saved by UnbrokenCheckpointIO; "
                              "restore it with run.checkpoint.restore_path instead")
        checkpoint, versions = self._read(manifest)
        if map_location is not None:
            checkpoint = _to_device(checkpoint, map_location)
        if isinstance(versions, dict) and isinstance(checkpoint.get("state_dict"), dict):
            checkpoint["state_dict"] = OrderedDict(checkpoint["state_dict"])
            checkpoint["state_dict"]._metadata = OrderedDict(versions)  # as torch.load would give it back
        return checkpoint

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        """Do nothing: which checkpoints to keep is unbroken's retention (``init(keep=...)``)."""
        log.debug("unbroken: not removing %s: retention follows init(keep=...)", path)

    # -- helpers -------------------------------------------------------------------------------
    def _find(self, path: str | os.PathLike) -> Manifest:
        label = os.fspath(path)
        manifests = self.run.checkpoint.list()
        by_uuid = {m.uuid: m for m in manifests}
        for key in (label, Path(label).name):
            if key in by_uuid:
                return by_uuid[key]
        for manifest in reversed(manifests):  # newest first
            if manifest.metadata.get("lightning_path") == label:
                return manifest
        raise CheckpointNotFound(f"no checkpoint {label!r} in trial {self.run.info.experiment!r}: give a uuid, "
                                 "or resume_ckpt_path(run) for the newest good one")

    def _read(self, manifest: Manifest) -> tuple[dict[str, Any], Any]:
        """The checkpoint dict and the state_dict versions, every byte verified while read."""
        context = self.run.checkpoint
        store = context.store
        state = State(rng=False, **{ENTRY: None, VERSIONS: None})
        try:
            with store.reading(manifest.uuid):  # leased: retention cannot delete it meanwhile
                statefile.restore(state, store.local_copy(manifest.uuid), manifest, allow_pickle=self.allow_pickle,
                                  strict=False, in_place=False, resolve=store.local_copy)
        except CorruptCheckpoint as exc:
            context.report_corrupt(manifest.uuid, str(exc))
            raise
        store.mark_verified(manifest.uuid)
        context.record_restore(manifest)
        if not isinstance(state[ENTRY], dict):
            raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: the Lightning entry is not a dict")
        return state[ENTRY], state[VERSIONS]


def _to_device(tree: Any, device: str | torch.device) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_device(v, device) for v in tree)
    return tree
