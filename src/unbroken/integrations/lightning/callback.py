"""UnbrokenCallback: a stop request becomes a checkpoint at the next batch end and a clean stop.

Also reports Lightning's logged metrics to ``run.train`` and commits the final state of a fit.
Hooks run in the training (main) thread on every rank.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import lightning.pytorch as pl
import torch

from ...errors import ConfigError
from ...runtime.run import Run
from .checkpoint_io import UnbrokenCheckpointIO

log = logging.getLogger("unbroken")


class UnbrokenCallback(pl.Callback):
    """Save and stop at the next batch end after a stop request; report metrics (module docstring).

    Training metrics (``trainer.logged_metrics``, else ``callback_metrics``) are reported on rank 0
    every ``report_every_n_steps`` (default: the trainer's ``log_every_n_steps``); after each
    validation, ``callback_metrics`` as validation metrics. A stop is not honoured before
    Lightning's ``min_epochs``/``min_steps`` (Lightning ignores ``should_stop`` until then), and a
    deadline stops at the first batch end past it: give ``init(deadline=...)`` the margin a save needs.
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
        self._reported_step = -1  # with gradient accumulation several batches end at one step
        run.preempt.install()  # main thread: before Lightning registers its handlers
        self._handlers = {sig: signal.getsignal(sig) for sig in run.preempt.signals} if run.preempt.armed else {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse (ConfigError) a trainer without the plugin, or ranks unbroken.init() did not join as a group."""
        if stage != "fit":
            return
        if not isinstance(trainer.strategy.checkpoint_io, UnbrokenCheckpointIO):
            raise ConfigError("UnbrokenCallback needs Trainer(plugins=[UnbrokenCheckpointIO(run)]): without it "
                              "Lightning's checkpoints are plain files unbroken cannot resume from")
        if trainer.world_size != self.run.distributed.size:
            raise ConfigError(f"the trainer has {trainer.world_size} ranks but unbroken.init() joined "
                              f"{self.run.distributed.size}: call torch.distributed.init_process_group() before "
                              "unbroken.init() so that the run is the ranks' group")

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
        """Stop at this batch? The same answer on every rank (in a group: one allgather)."""
        return self.run.preempt.agree()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        numbers = _numbers(trainer.callback_metrics)
        if numbers:
            self.run.train.report_validation_metrics(trainer.global_step, numbers)

    def _report_training(self, trainer: pl.Trainer) -> None:
        every = self.report_every_n_steps or trainer.log_every_n_steps
        step = trainer.global_step
        if not trainer.is_global_zero or every <= 0 or step % every or step == self._reported_step:
            return
        self._reported_step = step
        numbers = _numbers(trainer.logged_metrics or trainer.callback_metrics)
        if numbers:
            self.run.train.report_training_metrics(step, numbers)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out
