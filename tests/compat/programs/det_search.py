"""A Determined core-API trial of a hyperparameter search, with only the import changed.

It reads its hyperparameters from the cluster info, resumes from ``info.latest_checkpoint``,
trains to each searcher operation's length (checkpointing every batch), reports the validation
loss and completes the operation with it. The loss is a known function of the hyperparameters
and the batches trained (:func:`objective`), so a test can tell which trial must win.

``$DET_SEARCH_LOG`` (a folder): each process appends one JSON line to ``<trial number>.jsonl``:
the hyperparameters it got, the config's ``data`` section (``info.trial.user_data``), the step it
resumed from and the operation's length.
"""

import json
import math
import os
import sys

import unbroken.compat.determined as det  # was: import determined as det


def objective(hparams, steps):
    """Smaller is better; best at w = 3, lr = 0.01, opt.name = adam; lower after more batches."""
    opt = hparams["opt"]
    return ((hparams["w"] - 3) ** 2 + (math.log10(opt["lr"]) + 2) ** 2 + (0.0 if opt["name"] == "adam" else 0.5)
            + 1.0 / steps)


def main(core_context, info):
    hparams = info.trial.hparams
    start = 0
    if info.latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
            start = int((path / "steps").read_text())
    for op in core_context.searcher.operations():
        log(info, hparams, start, op.length)
        for batch in range(start, op.length):
            steps = batch + 1
            metrics = {"loss": objective(hparams, steps)}
            core_context.train.report_training_metrics(steps_completed=steps, metrics=metrics)
            with core_context.checkpoint.store_path({"steps_completed": steps}) as (path, _uuid):
                (path / "steps").write_text(str(steps))
            if core_context.preempt.should_preempt():
                return
        loss = objective(hparams, op.length)
        core_context.train.report_validation_metrics(steps_completed=op.length, metrics={"loss": loss})
        op.report_completed(loss)


def log(info, hparams, start, length):
    folder = os.environ.get("DET_SEARCH_LOG")
    if folder:
        with open(os.path.join(folder, f"{info.trial.number}.jsonl"), "a") as f:
            line = {"hparams": hparams, "data": info.trial.user_data, "start": start, "length": length}
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    cluster_info = det.get_cluster_info()
    if cluster_info is None:
        sys.exit("this trial runs on a cluster: `unbroken sweep run --config exp.yaml -- python det_search.py`")
    with det.core.init() as context:
        main(context, cluster_info)
