"""A Determined core-API trial in the shape of Determined's fault-tolerance tutorial (checkpoints,
metrics, hyperparameters, searcher), with only the import changed."""

import logging
import pathlib
import sys
import time

import unbroken.compat.determined as det  # was: import determined as det


def save_state(x, steps_completed, trial_id, checkpoint_directory):
    with checkpoint_directory.joinpath("state").open("w") as f:
        f.write(f"{x},{steps_completed},{trial_id}")


def load_state(trial_id, checkpoint_directory):
    checkpoint_directory = pathlib.Path(checkpoint_directory)
    with checkpoint_directory.joinpath("state").open("r") as f:
        x, steps_completed, ckpt_trial_id = [int(field) for field in f.read().split(",")]
    if ckpt_trial_id == trial_id:
        return x, steps_completed
    return x, 0


def main(core_context, latest_checkpoint, trial_id, increment_by):
    x = 0
    starting_batch = 0
    if latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(latest_checkpoint) as path:
            x, starting_batch = load_state(trial_id, path)
    for op in core_context.searcher.operations():
        for batch in range(starting_batch, op.length):
            x += increment_by
            steps_completed = batch + 1
            time.sleep(0.02)  # the "training"
            if steps_completed % 5 == 0:
                core_context.train.report_training_metrics(steps_completed=steps_completed, metrics={"x": x})
                op.report_progress(steps_completed)
                checkpoint_metadata = {"steps_completed": steps_completed}
                with core_context.checkpoint.store_path(checkpoint_metadata) as (path, uuid):
                    save_state(x, steps_completed, trial_id, path)
                if core_context.preempt.should_preempt():
                    return
        core_context.train.report_validation_metrics(steps_completed=op.length, metrics={"x": x})
        op.report_completed(x)
    print(f"final x={x}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT, stream=sys.stderr)
    info = det.get_cluster_info()
    assert info is not None, "this example only runs on-cluster"
    with det.core.init() as core_context:
        main(core_context=core_context, latest_checkpoint=info.latest_checkpoint, trial_id=info.trial.trial_id,
             increment_by=info.trial.hparams["increment_by"])
