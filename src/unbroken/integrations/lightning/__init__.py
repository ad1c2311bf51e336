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

Ranks (DDP under ``unbroken run --nproc-per-node N``): create the process group before
``unbroken.init()`` (``torch.distributed.init_process_group(...)``) so that init joins it and
Lightning reuses it. Lightning writes checkpoints on global rank 0 only (this plugin's save is
rank-local: no collective), every rank loads them; the stop decision is agreed at every batch
end (one allgather) so all ranks save and stop after the same batch.
"""

from .callback import UnbrokenCallback
from .checkpoint_io import UnbrokenCheckpointIO
from .resume import resume_ckpt_path, resume_position

__all__ = ["UnbrokenCallback", "UnbrokenCheckpointIO", "resume_ckpt_path", "resume_position"]
