"""Hugging Face ``transformers.Trainer`` on unbroken's checkpoints: a callback and a resume helper.

::

    from unbroken.integrations.transformers import UnbrokenTrainerCallback, resume_path

    with unbroken.init(name="bert", keep=unbroken.keep_latest(3)) as run:
        trainer = Trainer(model, args, train_dataset=ds, callbacks=[UnbrokenTrainerCallback(run)])
        trainer.train(resume_from_checkpoint=resume_path(run, args.output_dir))

* **Saving.** Every ``checkpoint-N`` folder the Trainer writes (``save_strategy``/``save_steps``
  decide when) is moved, in ``on_save``, into a new unbroken checkpoint (``steps_completed`` =
  ``global_step``) that is checksummed, fsynced and committed atomically; the run's ``keep=``
  policy then prunes older ones. The Trainer's own folder is removed once its files are moved:
  it is an unverified copy that ``resume_from_checkpoint=True`` would otherwise pick after a
  crash mid-write, its ``save_total_limit`` rotation would fight ``keep=``, and it doubles the
  disk use. So ``args.output_dir`` holds no ``checkpoint-*`` folder; the checkpoints are
  listed by ``unbroken show``. (``load_best_model_at_end`` needs the Trainer's folders and is
  refused; ``save_only_model`` cannot resume exactly and is refused; ``push_to_hub`` with
  ``hub_strategy="checkpoint"`` finds no folder to push.)
* **Resuming.** :func:`resume_path` gives a local, verified, faithful copy of the newest
  checkpoint that verifies (model, optimizer, scheduler, RNG states, ``trainer_state.json``;
  a corrupt newest one is skipped with a CorruptCheckpointWarning), or None on a fresh trial:
  the Trainer's own resume then restores everything and skips the consumed batches (it
  reads the ``.pt`` files with ``torch.load(weights_only=True)``: no arbitrary unpickling, and
  only after unbroken checked every file against the manifest's checksums).
* **Stopping.** A stop request (SIGTERM, the preempt signal, a deadline) seen at a step end
  sets ``should_save`` and ``should_training_stop``: the Trainer saves that step (committed as
  above) and ``train()`` returns; leaving the ``with`` block then exits 75.
* **Metrics.** ``on_log`` numbers go to ``run.train``: ``eval_*`` as validation metrics (prefix
  dropped), the rest as training metrics, at ``global_step``.

Threads and ranks: the Trainer calls the callback in the training (main) thread. In a
torch.distributed group every rank must hold the callback; each rank writes its files into the
shared folder, the ranks meet at a barrier, rank 0 alone commits, and they meet again before
training goes on; a stop request on any rank stops all (one small allgather per step). Under
torchrun, touch ``args.device`` before ``unbroken.init()`` so that torch.distributed is started
and the run joins the group. The group path was checked by hand (2 gloo ranks, a SIGTERM to
one rank, resume bitwise equal); the test suite covers a single process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import CheckpointError, ConfigError
from ..runtime.run import Run

PREFIX = "checkpoint"
RESUME_FOLDER = "unbroken-resume"


class UnbrokenTrainerCallback(TrainerCallback):
    """Commit the Trainer's checkpoints, stop on request and report metrics (see the module docstring)."""

    def __init__(self, run: Run):
        self.run = run
        self.committed: list[str] = []  # uuids this callback committed, oldest first

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        """Refuse arguments that break exact resume; install the stop handlers now (main thread)."""
        _check_args(args)
        self.run.preempt.should_preempt()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:
        """On a stop request: save this step and end training (a collective in a group)."""
        if self._stop_requested():
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        """Move ``output_dir/checkpoint-<global_step>`` into a committed checkpoint (rank 0)."""
        group = self.run.distributed
        if group.size > 1:
            group.barrier()  # every rank's files (its RNG state) are in the folder
        if group.is_chief:
            self.committed.append(commit_folder(self.run, _folder(args, state), state))
        if group.size > 1:
            group.barrier()  # committed before any rank goes on (or exits 75)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Report numeric logs: ``eval_*`` as validation metrics, the rest as training metrics."""
        if not state.is_world_process_zero or not logs:
            return
        train, val = split_logs(logs)
        if train:
            self.run.train.report_training_metrics(state.global_step, train)
        if val:
            self.run.train.report_validation_metrics(state.global_step, val)

    def _stop_requested(self) -> bool:
        return self.run.preempt.agree()  # a collective in a group: the same answer on every rank


def commit_folder(run: Run, folder: Path, state: TrainerState) -> str:
    """Move the files of a Trainer checkpoint ``folder`` into a new committed checkpoint; its uuid.

    Files are moved (renamed, or copied then removed across filesystems), then ``folder`` is
    removed. If anything fails nothing is committed and the error propagates (CheckpointError
    when ``folder`` is missing).
    """
    if not folder.is_dir():
        raise CheckpointError(f"the Trainer's checkpoint folder {folder} is missing: on_save expects "
                              f"output_dir/{PREFIX}-<global_step> (hyperparameter search runs are not supported)")
    metadata = {"steps_completed": state.global_step, "epoch": state.epoch, "framework": "transformers"}
    with run.checkpoint.store_path(metadata) as (path, uuid):
        for entry in sorted(folder.iterdir()):
            shutil.move(str(entry), str(path / entry.name))
    shutil.rmtree(folder, ignore_errors=True)
    return uuid


def resume_path(run: Run, output_dir: str | Path) -> str | None:
    """A local, verified copy of the newest checkpoint that verifies, for ``resume_from_checkpoint``.

    Returns None on a fresh trial. Corrupt checkpoints are skipped (CorruptCheckpointWarning
    "skipping corrupt checkpoint <uuid>", marked corrupt in the index). The copy lives in
    ``output_dir/unbroken-resume/<uuid>`` (``.../rank-<r>/<uuid>`` in a group; earlier copies
    there are removed first) so that it
    stays valid while training prunes checkpoints. Records the checkpoint as the attempt's
    resume point. Raises CheckpointError if that checkpoint was not written by
    :class:`UnbrokenTrainerCallback` (e.g. by ``run.save``). In a group, rank 0 picks the checkpoint and every rank copies it. Blocks
    for the copy; call it from the training thread on every rank.
    """
    group = run.distributed
    latest = run.checkpoint.latest_checkpoint if group.is_chief else None
    if group.size > 1:
        latest = group.broadcast(latest)
    holder = Path(output_dir) / RESUME_FOLDER
    if group.size > 1:
        holder = holder / f"rank-{group.rank}"  # ranks may share output_dir
    shutil.rmtree(holder, ignore_errors=True)
    if latest is None:
        return None
    _check_written_by_trainer(run, latest)
    dest = holder / latest
    with run.checkpoint.restore_path(latest):  # verifies, leases, records the resume point
        run.checkpoint.download(latest, dest)
    return str(dest)


def split_logs(logs: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(training, validation) numbers of a Trainer log; ``eval_`` is dropped from validation names."""
    numbers = {k: float(v) for k, v in logs.items() if _is_number(v)}
    train = {k: v for k, v in numbers.items() if not k.startswith("eval_")}
    val = {k[len("eval_"):]: v for k, v in numbers.items() if k.startswith("eval_")}
    return train, val


def _folder(args: TrainingArguments, state: TrainerState) -> Path:
    return Path(args.output_dir) / f"{PREFIX}-{state.global_step}"


def _check_written_by_trainer(run: Run, uuid: str) -> None:
    if run.checkpoint.get_metadata(uuid).get("framework") != "transformers":
        raise CheckpointError(f"the newest checkpoint {uuid} was not written by UnbrokenTrainerCallback, so the "
                              "Trainer cannot resume from it: train this trial with the callback only, or start "
                              "a new trial (unbroken.init(..., fresh=True))")


def _check_args(args: TrainingArguments) -> None:
    if args.load_best_model_at_end:
        raise ConfigError("UnbrokenTrainerCallback moves each checkpoint-N folder into unbroken's store, so "
                          "load_best_model_at_end cannot find it: set load_best_model_at_end=False and pick "
                          "the best checkpoint from the run's metrics")
    if args.save_only_model:
        raise ConfigError("save_only_model=True saves no optimizer, scheduler or RNG state, so a resume "
                          "cannot be exact: set save_only_model=False to use UnbrokenTrainerCallback")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
