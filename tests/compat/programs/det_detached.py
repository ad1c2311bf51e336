"""A detached (unmanaged) Determined trial with core_v2, with only the import changed: restore,
report, store every 10 steps, close."""

import sys
import time

from unbroken.compat.determined.experimental import core_v2  # was: from determined.experimental import core_v2


def main(total):
    core_v2.init(
        defaults=core_v2.DefaultConfig(name="detached-demo", hparams={"increment_by": 2}),
        unmanaged=core_v2.UnmanagedConfig(external_experiment_id="detached-demo", external_trial_id="detached-demo"),
    )
    x, start = 0, 0
    latest = core_v2.info.latest_checkpoint
    if latest is not None:
        with core_v2.checkpoint.restore_path(latest) as path:
            x, start = (int(v) for v in (path / "state").read_text().split(","))
    increment_by = core_v2.info.trial.hparams["increment_by"]
    for step in range(start, total):
        x += increment_by
        time.sleep(0.02)  # the "training"
        core_v2.train.report_training_metrics(steps_completed=step + 1, metrics={"x": x})
        if (step + 1) % 10 == 0:
            with core_v2.checkpoint.store_path({"steps_completed": step + 1}) as (path, uuid):
                (path / "state").write_text(f"{x},{step + 1}")
            if core_v2.preempt.should_preempt():
                break
    else:
        print(f"final x={x}", flush=True)
    core_v2.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
