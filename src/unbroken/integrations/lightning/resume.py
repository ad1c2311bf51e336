"""Where a Lightning fit resumes: the checkpoint (``ckpt_path``) and the data position in its epoch."""

from __future__ import annotations

import lightning.pytorch as pl

from ...runtime.run import Run


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
