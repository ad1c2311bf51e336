"""A Keras 3 callback in the spirit of ``keras.callbacks.BackupAndRestore``, on unbroken's checkpoints.

::

    with unbroken.init(name="mnist", keep=unbroken.keep_latest(3)) as run:
        model.fit(x, y, epochs=20, callbacks=[UnbrokenCallback(run)])

* At the start of ``fit`` it loads the newest checkpoint that verifies (weights and optimizer
  state; a corrupt one is skipped with a CorruptCheckpointWarning) and sets the initial epoch.
* At the end of every ``save_every_epochs``-th epoch it commits the weights atomically
  (``steps_completed`` = epochs done) and reports the epoch's logs (``val_*`` as validation).
* On a stop request (SIGTERM, the preempt signal, a deadline) it ends the epoch early, saves
  nothing partial (the last completed epoch is the resume point), and stops ``fit``; leaving
  the ``with`` block then exits 75. Resume is at epoch granularity.
"""

from __future__ import annotations

from typing import Any

import keras

from ..runtime.run import Run

WEIGHTS_FILE = "checkpoint.weights.h5"


class UnbrokenCallback(keras.callbacks.Callback):
    """Checkpoint, resume and stop ``model.fit`` through ``run`` (see the module docstring)."""

    def __init__(self, run: Run, save_every_epochs: int = 1):
        super().__init__()
        self.run = run
        self.save_every_epochs = save_every_epochs
        self.restored_epoch = 0
        self._partial = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        latest = self.run.checkpoint.latest_checkpoint  # the newest that verifies
        if latest is None:
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        with self.run.checkpoint.restore_path(latest) as path:
            self.model.load_weights(path / WEIGHTS_FILE)
        self.restored_epoch = self.run.checkpoint.get_metadata(latest)["steps_completed"]
        self.model._initial_epoch = self.restored_epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.run.preempt.should_preempt():
            self._partial = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._partial:
            return  # a partial epoch is no resume point
        done = epoch + 1
        self._report(done, logs or {})
        stop = self.run.preempt.should_preempt()
        if stop or done % self.save_every_epochs == 0:
            with self.run.checkpoint.store_path({"steps_completed": done, "epoch": done}) as (path, _):
                self.model.save_weights(path / WEIGHTS_FILE)
        if stop:
            self.model.stop_training = True

    def _report(self, done: int, logs: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in logs.items() if _is_number(v)}
        train = {k: v for k, v in numbers.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in numbers.items() if k.startswith("val_")}
        if train:
            self.run.train.report_training_metrics(done, train)
        if val:
            self.run.train.report_validation_metrics(done, val)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
