"""PyTorch Lightning on unbroken's checkpoints: a CheckpointIO plugin, a stop callback, resume.

::

    from unbroken.integrations.lightning import UnbrokenCallback, UnbrokenCheckpointIO, resume_ckpt_path

    with unbroken.init(name="mnist", keep=unbroken.keep_latest(3)) as run:
        trainer = L.Trainer(plugins=[UnbrokenCheckpointIO(run)],
                            callbacks=[UnbrokenCallback(run), ModelCheckpoint(every_n_train_steps=200, save_top_k=-1)])
        trainer.fit(model, data, ckpt_path=resume_ckpt_path(run))

* :class:`UnbrokenCheckpointIO` stores every checkpoint Lightning saves (``ModelCheckpoint``,
  ``trainer.save_checkpoint``) as an atomic, verified unbroken checkpoint in unbroken's tensor
  format (``steps_completed`` = ``global_step``); nothing is written at the path Lightning
  names, which is kept as a label. Loading verifies every byte and never unpickles unless
  ``allow_pickle=True``. Retention is unbroken's ``keep=``: Lightning's ``save_top_k``
  removals are ignored.
* :class:`UnbrokenCallback` turns unbroken's stop request (SIGTERM/SIGINT, the supervisor's
  signal, a deadline) into a checkpoint at the next training batch end and a clean stop
  (``trainer.should_stop``); leaving the ``with`` block then exits 75 so `unbroken run` resumes.
  It also reports Lightning's logged metrics to ``run.train`` and, when ``fit`` ends without a
  stop, commits the final state.
* :func:`resume_ckpt_path` gives ``trainer.fit``'s ``ckpt_path``: the newest checkpoint that
  verifies (a corrupt one is skipped with CorruptCheckpointWarning), or None on a fresh trial.

Mid-epoch resume: Lightning restores its loop counters, not the position of a plain
``DataLoader`` in its epoch; a checkpoint taken mid-epoch resumes with the epoch's remaining
batch count but re-reads the loader from its start. Make the loader resumable (start where
:func:`resume_position` says, or implement ``state_dict``/``load_state_dict``) or checkpoint
at epoch ends only.

SLURM: use ``SLURMEnvironment(auto_requeue=False)`` (see docs/migrating.md): unbroken's
supervisor, not ``scontrol requeue``, restarts the job, and Lightning's SIGUSR1 requeue handler
is not installed. Threads: Lightning calls all of this from the training (main) thread.
Ranks: Lightning writes checkpoints on global rank 0 only; the stop decision is made on every
rank and agreed with ``strategy.reduce_boolean_decision`` so all ranks stop at the same batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import CheckpointIO

from ..checkpoint import Manifest, State
from ..checkpoint.saving import statefile
from ..checkpoint.saving.saver import Saver
from ..errors import CheckpointNotFound, ConfigError, CorruptCheckpoint, UnsupportedValue
from ..runtime.run import Run

log = logging.getLogger("unbroken")

#: The State entry holding Lightning's checkpoint dict, and the metadata naming the format.
ENTRY, VERSIONS = "lightning", "state_dict_versions"
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
            raise ConfigError("UnbrokenCheckpointIO takes no storage_options: storage is unbroken's (init(storage=...))")
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
        manifest = self._find(path)
        if manifest.metadata.get("format") != FORMAT:
            raise ConfigError(f"checkpoint {manifest.uuid} was not saved by UnbrokenCheckpointIO; "
                              "restore it with run.checkpoint.restore_path instead")
        checkpoint = self._read(manifest)
        return checkpoint if map_location is None else _to_device(checkpoint, map_location)

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

    def _read(self, manifest: Manifest) -> dict[str, Any]:
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
        checkpoint, versions = state[ENTRY], state[VERSIONS]
        if not isinstance(checkpoint, dict):
            raise CorruptCheckpoint(f"checkpoint {manifest.uuid}: the Lightning entry is not a dict")
        if isinstance(versions, dict) and isinstance(checkpoint.get("state_dict"), dict):
            checkpoint["state_dict"] = OrderedDict(checkpoint["state_dict"])
            checkpoint["state_dict"]._metadata = OrderedDict(versions)  # as torch.load would give it back
        return checkpoint


def resume_ckpt_path(run: Run) -> str | None:
    """``ckpt_path`` for ``trainer.fit``: the uuid of the newest checkpoint that verifies, or None.

    Corrupt checkpoints are skipped with CorruptCheckpointWarning "skipping corrupt checkpoint
    <uuid>". Call it on every rank (each reads the shared store) before ``fit``.
    """
    return run.checkpoint.latest_checkpoint


def resume_position(trainer: pl.Trainer) -> tuple[int, int]:
    """``(epoch, batches done in it)`` where the fit being set up trains next: what a loader must skip.

    For a ``train_dataloader`` hook (Lightning restores its loop counters before it asks for
    data): on a resume from a checkpoint taken mid-epoch, that epoch and the batches its
    checkpoint had trained; after an epoch-end (or last-batch) checkpoint, the next epoch and 0;
    otherwise ``(trainer.current_epoch, 0)``. A loader whose batch order depends on the epoch
    only, and that skips that many batches of it, makes a resumed fit see the batches an
    uninterrupted one would.
    """
    loop = trainer.fit_loop
    epochs, batches = loop.epoch_progress.current, loop.epoch_loop.batch_progress
    if epochs.processed > epochs.completed:
        return epochs.completed + 1, 0  # saved at an epoch's end
    if not loop.restarting:
        return trainer.current_epoch, 0
    if batches.is_last_batch:
        return epochs.completed + 1, 0  # saved at the end of an epoch's last batch
    return epochs.completed, batches.current.processed


def _to_device(tree: Any, device: Any) -> Any:
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"UnbrokenCheckpointIO: map_location must be a device or its name, not {device!r}")
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_device(v, device) for v in tree)
    return tree


class UnbrokenCallback(pl.Callback):
    """Save and stop at the next batch end after a stop request; report metrics (module docstring).

    It needs :class:`UnbrokenCheckpointIO` in the trainer's plugins (ConfigError otherwise).
    Stop signals stay unbroken's while training: Lightning's own SIGTERM handler would end
    ``fit`` with ``SIGTERMException``, a SystemExit of status 0 that `unbroken run` would read as
    "finished".
    """

    def __init__(self, run: Run, *, report_every_n_steps: int | None = None, save_on_train_end: bool = True):
        super().__init__()
        self.run = run
        self.report_every_n_steps = report_every_n_steps
        self.save_on_train_end = save_on_train_end
        run.preempt.install()  # main thread: before Lightning registers its handlers
        self._handlers = {sig: signal.getsignal(sig) for sig in run.preempt.signals} if run.preempt.armed else {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not isinstance(trainer.strategy.checkpoint_io, UnbrokenCheckpointIO):
            raise ConfigError("UnbrokenCallback needs Trainer(plugins=[UnbrokenCheckpointIO(run)]): without it "
                              "Lightning's checkpoints are plain files unbroken cannot resume from")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning replaced the stop signals' handlers at the start of fit: give them back to unbroken.

        Lightning's teardown puts back what was there before fit (unbroken's), and the run's
        close what was there before unbroken.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._handlers.items():
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._report_training(trainer)
        if self._stop_agreed(trainer) and not trainer.should_stop:
            label = os.path.join(trainer.default_root_dir, f"unbroken-stop-step={trainer.global_step}.ckpt")
            trainer.save_checkpoint(label, weights_only=False)
            trainer.should_stop = True
            log.warning("unbroken: stopping Lightning at step %d (%s); checkpoint saved", trainer.global_step,
                        self.run.preempt.reason)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Commit the state ``fit`` ended with, unless that step is saved already (after a stop it is).

        A completed trial's newest checkpoint is then its end: a rerun resumes there and trains
        nothing. Rank 0 decides (it is the one that writes) and every rank follows.
        """
        if not self.save_on_train_end:
            return
        io = trainer.strategy.checkpoint_io
        saved = isinstance(io, UnbrokenCheckpointIO) and io.last_saved_step == trainer.global_step
        if trainer.strategy.broadcast(saved, src=0):
            return
        label = os.path.join(trainer.default_root_dir, f"unbroken-final-step={trainer.global_step}.ckpt")
        trainer.save_checkpoint(label, weights_only=False)

    def _stop_agreed(self, trainer: pl.Trainer) -> bool:
        """Stop at this batch? Every rank gets the same answer: True once any rank was asked to stop."""
        preempt = self.run.preempt
        if hasattr(preempt, "agree"):  # a torch.distributed group unbroken.init() joined: one allgather
            return preempt.agree()
        stop = preempt.should_preempt()
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(stop, all=False) and not stop:
            preempt.request("another rank was asked to stop")
            stop = True
        return stop

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        numbers = _numbers(trainer.callback_metrics)
        if numbers:
            self.run.train.report_validation_metrics(trainer.global_step, numbers)

    def _report_training(self, trainer: pl.Trainer) -> None:
        every = self.report_every_n_steps or trainer.log_every_n_steps
        if not trainer.is_global_zero or every <= 0 or trainer.global_step % every:
            return
        numbers = _numbers(trainer.logged_metrics or trainer.callback_metrics)
        if numbers:
            self.run.train.report_training_metrics(trainer.global_step, numbers)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out
