"""Determined's distributed core-API tutorial shape, with only the import changed: every rank trains,
the chief gathers and reports, every rank stores its own file into one checkpoint (shard=True),
all ranks ask should_preempt() together. Launched by `unbroken run --nproc-per-node 2`."""

import logging
import pathlib
import sys
import time

import unbroken.compat.determined as det  # was: import determined as det


def main(core_context, latest_checkpoint, increment_by):
    rank = core_context.distributed.rank
    x, starting_batch = 0, 0
    if latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(latest_checkpoint) as path:
            x, starting_batch = [int(f) for f in pathlib.Path(path, f"state-rank{rank}").read_text().split(",")]
    for op in core_context.searcher.operations():
        for batch in range(starting_batch, op.length):
            x += increment_by * (rank + 1)
            steps_completed = batch + 1
            time.sleep(0.05)  # the "training"
            if steps_completed % 5 == 0:
                all_xs = core_context.distributed.gather(x)
                if rank == 0:
                    core_context.train.report_training_metrics(steps_completed=steps_completed,
                                                               metrics={"x": sum(all_xs)})
                    op.report_progress(steps_completed)
                with core_context.checkpoint.store_path({"steps_completed": steps_completed}, shard=True) as (path, _):
                    pathlib.Path(path, f"state-rank{rank}").write_text(f"{x},{steps_completed}")
                if core_context.preempt.should_preempt():
                    return
        if rank == 0:
            op.report_completed(x)
    print(f"rank {rank} final x={x}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT, stream=sys.stderr)
    distributed = det.core.DistributedContext.from_torch_distributed()
    info = det.get_cluster_info()
    with det.core.init(distributed=distributed) as core_context:
        main(core_context, info.latest_checkpoint, info.trial.hparams["increment_by"])
